import HealthCore
import PostgresProbe
import Testing

/// Connection strings parsed by libpq itself, damaged around a planted password: a bad one
/// gets an error, a good one a display, and neither ever shows the password.
@Suite struct ConnectionStringFuzzTests {
    static let password = "Sentinel-cs-PW"

    @Test func malformedConnectionStringsNeverShowThePassword() {
        var fuzz = RequestFuzzer(seed: 0x5EED_C0DE_0000_0001)
        let junk = ["", "@", "/", ":", "?", "&", "=", "%", "%zz", "%2F", "[", "]", "[::1]", ",", " ", "'", "\"", "\\", "#",
                    "\u{0}", "\u{301}", "é", "\n", "\t", "host=", "password=", "sslmode=bogus", "port=x", "5432", "db", "h"]
        var count = 0
        var failures = 0
        for index in 0..<11_000 {
            var before = fuzz.pick(["postgresql://", "postgres://", "POSTGRESQL://", "postgresql://", "postgresql://[::1", "x postgresql://"])
            var after = fuzz.pick(["h/db", "h:5432/db", "h,h2:5433/db?sslmode=disable", "[::1]:5432/db", "/db", "", "h/db?password=x"])
            for _ in 0..<fuzz.int(0..<4) {
                let piece = fuzz.pick(junk)
                if fuzz.oneIn(2) {
                    let at = before.index(before.startIndex, offsetBy: fuzz.int(0..<(before.count + 1)))
                    before.insert(contentsOf: piece, at: at)
                } else {
                    let at = after.index(after.startIndex, offsetBy: fuzz.int(0..<(after.count + 1)))
                    after.insert(contentsOf: piece, at: at)
                }
            }
            let user = fuzz.pick(["u", "", "app%40x", "u:"])
            let connection: String
            switch fuzz.int(0..<4) {
            case 0: connection = "\(before)\(user):\(Self.password)@\(after)"
            case 1: connection = "\(before)\(after)\(after.contains("?") ? "&" : "?")password=\(Self.password)"
            case 2: connection = "host=h \(fuzz.pick(junk))password=\(Self.password) \(fuzz.pick(junk))\(fuzz.pick(["dbname=x", "port=", "x", "'"]))"
            default: connection = "host=h password='\(Self.password)\(fuzz.pick(junk))' \(fuzz.pick(junk))"
            }
            count += 1
            do {
                let target = try ConnectionTarget.parse(connection)
                #expect(!target.display.utf8.contains(Self.password.utf8), "#\(index) \(connection.debugDescription): \(target.display)")
                // Whatever libpq took for the password is masked wherever a message repeats it.
                if let parsed = target.value("password"), parsed.utf8.count >= 4, !parsed.contains("*") {
                    let message = target.scrubber.scrub("connection to \(parsed) failed: \"\(parsed)\"")
                    #expect(!message.utf8.contains(parsed.utf8), "#\(index) \(connection.debugDescription): \(message)")
                    #expect(!target.display.utf8.contains(parsed.utf8), "#\(index) \(connection.debugDescription): \(target.display)")
                }
            } catch {
                failures += 1
                #expect(!error.description.utf8.contains(Self.password.utf8), "#\(index) \(connection.debugDescription): \(error)")
                #expect(error.description.hasPrefix("invalid connection string: "))
            }
        }
        #expect(count >= 10_000)
        #expect(failures > count / 10)
    }

    /// Found by the test above.
    @Test func aQuoteInsideTheQuotedPieceOfALibpqErrorDoesNotEndTheMask() throws {
        let error = try #require(throws: ConnectionStringError.self) { try ConnectionTarget.parse("post\"gres://app:pw-9f3@h/db") }
        #expect(!error.description.contains("pw-9f3"), "\(error)")
        #expect(error.description.hasPrefix("invalid connection string: missing \"***\" after \"***\""), "\(error)")
    }

    @Test(arguments: ["host=postgresql://u:pw-9f3@h/db", "sslmode=postgresql://u:pw-9f3@h", "host=h port=u:pw-9f3@h", "hostaddr=pw-9f3@h"])
    func aURLGivenAsAnOptionValueIsRefused(connection: String) throws {
        let error = try #require(throws: ConnectionStringError.self) { try ConnectionTarget.parse(connection) }
        #expect(error.description.contains("holds a URL or user information"))
        #expect(!error.description.contains("pw-9f3"))
    }

    @Test func abstractSocketsAndAtSignsInUserNamesStillParse() throws {
        #expect(try ConnectionTarget.parse("host=@pgsock user=app@tenant dbname=x").value("host") == "@pgsock")
    }
}
