/// The version, written here only: `--version` of both programs, `/status`, every recorded
/// event. The Debian changelog and the manual pages carry it too, and a test holds them to it.
public enum DaemonVersion {
    public static let current = "0.1.0"
}
