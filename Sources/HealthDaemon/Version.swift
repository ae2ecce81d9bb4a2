/// The version reported by `--version`, `/status` and (later) every recorded event.
public enum DaemonVersion {
    public static let current = "0.1.0"
}
