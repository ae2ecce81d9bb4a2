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

    @Test(arguments: [
        ("connection to server at \"127.0.0.1\", port 5432 failed: SSL error: certificate verify failed", FailureReason.tlsCertificate),
        ("server certificate for \"db.example.com\" does not match host name \"127.0.0.1\"", .tlsCertificate),
        ("root certificate file \"/x/root.crt\" does not exist Either provide the file or change sslmode", .tlsCertificate),
        ("server does not support SSL, but SSL was required", .tlsRequired),
        ("channel binding required, but server authenticated client without channel binding", .channelBinding),
        ("channel binding is required, but server did not offer an authentication method that supports channel binding", .channelBinding),
        ("invalid SCRAM response (nonce mismatch)", .auth),
    ])
    func tlsAndAuthenticationConfigurationHaveReasonsOfTheirOwn(message: String, reason: FailureReason) {
        #expect(FailureClassifier.reason(sqlstate: nil, message: message) == reason)
    }

    @Test func refusalsOfTheStartupOptionsByPoolers() {
        // PgBouncer before 1.20, and from 1.20 on.
        #expect(FailureClassifier.refusesStartupOptions(sqlstate: "08P01", message: "FATAL: unsupported startup parameter: options"))
        #expect(FailureClassifier.refusesStartupOptions(
            sqlstate: "08P01", message: "unsupported startup parameter in options: statement_timeout"
        ))
        // A serverless proxy relaying it, with its advice.
        #expect(FailureClassifier.refusesStartupOptions(
            sqlstate: "XX000",
            message: "ERROR: unsupported startup parameter in options: statement_timeout. Please use unpooled connection or remove this parameter from the startup package."
        ))
        // Another parameter, or another server's error with a similar text, is not ours.
        #expect(!FailureClassifier.refusesStartupOptions(sqlstate: "08P01", message: "unsupported startup parameter: extra_float_digits"))
        #expect(!FailureClassifier.refusesStartupOptions(sqlstate: "42704", message: "unsupported startup parameter: options"))
        #expect(!FailureClassifier.refusesStartupOptions(sqlstate: "28P01", message: "password authentication failed"))
    }
}
