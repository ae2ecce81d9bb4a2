import CLibPQ

public enum LibPQ {
    /// The version of the libpq loaded (not the one built against): "15.10" for
    /// `PQlibVersion()` 150010.
    public static var version: String {
        let number = Int(PQlibVersion())
        return number >= 100_000 ? "\(number / 10_000).\(number % 10_000)" : "\(number / 10_000).\(number / 100 % 100).\(number % 100)"
    }
}
