import Testing
@testable import HealthCore

@Suite struct FailureClassifierTests {
    @Test func sqlstatesFromVerboseConnectionErrors() {
        let message = """
            connection to server at "127.0.0.1", port 5432 failed: FATAL:  28P01: password authentication failed for user "app"
            LOCATION:  auth_failed, auth.c:335

            """
        #expect(FailureClassifier.sqlstate(inConnectionError: message) == "28P01")
        #expect(FailureClassifier.tidy(message) == #"connection to server at "127.0.0.1", port 5432 failed: FATAL: password authentication failed for user "app""#)
        #expect(FailureClassifier.sqlstate(inConnectionError: "FATAL:  sorry, too many clients already") == nil)
        #expect(FailureClassifier.sqlstate(inConnectionError: "FATAL:  57P03: the database system is starting up") == "57P03")
    }

    @Test(arguments: [
        ("28P01", FailureReason.auth), ("28000", .auth), ("53300", .tooManyConnections),
        ("57P03", .startingOrStopping), ("42501", .serverError), ("57P01", .serverError),
    ])
    func reasonBySqlstate(sqlstate: String, reason: FailureReason) {
        #expect(FailureClassifier.reason(sqlstate: sqlstate, message: "") == reason)
    }

    @Test func reasonByText() {
        #expect(FailureClassifier.reason(sqlstate: nil, message: "connection to server at \"127.0.0.1\", port 1 failed: Connection refused") == .refused)
        #expect(FailureClassifier.reason(sqlstate: nil, message: "connection to server on socket \"/x/.s.PGSQL.5432\" failed: No such file or directory") == .refused)
        #expect(FailureClassifier.reason(sqlstate: nil, message: "could not translate host name \"x\" to address") == .dns)
        #expect(FailureClassifier.reason(sqlstate: nil, message: "server closed the connection unexpectedly") == .network)
        #expect(FailureClassifier.reason(sqlstate: nil, message: "something new") == .other)
    }
}
