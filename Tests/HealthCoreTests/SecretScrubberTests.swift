import Testing
@testable import HealthCore

@Suite struct SecretScrubberTests {
    @Test func urlPasswordsRawAndDecoded() {
        let scrubber = SecretScrubber(connectionString: "postgresql://app:p%40ss%2Fw0rd@db:5432/app?sslmode=require")
        #expect(scrubber.secrets.contains("p%40ss%2Fw0rd"))
        #expect(scrubber.secrets.contains("p@ss/w0rd"))
        #expect(scrubber.scrub("failed for p@ss/w0rd and p%40ss%2Fw0rd") == "failed for *** and ***")
    }

    @Test func queryAndKeyValuePasswords() {
        #expect(SecretScrubber.passwords(in: "postgres://db/app?user=x&password=topsecret") == ["topsecret"])
        #expect(SecretScrubber.passwords(in: "host=db password=plain user=x") == ["plain"])
        #expect(Set(SecretScrubber.passwords(in: #"host=db password = 'it\'s long' user=x"#)) == ["it's long", #"it\'s long"#])
        #expect(SecretScrubber.passwords(in: "host=db user=x").isEmpty)
    }

    @Test func malformedPercentTokensAreMasked() {
        // libpq 15 echoes the offending token of a URL, often the password.
        let scrubber = SecretScrubber(connectionString: "postgresql://app:s3c%zzret@db/app")
        let message = #"invalid percent-encoded token: "s3c%zzret""#
        #expect(scrubber.scrub(message) == #"invalid percent-encoded token: "***""#)
        #expect(SecretScrubber().scrub(#"invalid percent-encoded token: "other%zz""#) == #"invalid percent-encoded token: "***""#)
    }

    @Test func longestSecretFirst() {
        let scrubber = SecretScrubber(secrets: ["abc", "abcdef"])
        #expect(scrubber.scrub("xabcdefx abc") == "x***x ***")
    }
}

@Suite struct SecretScrubberMoreTests {
    @Test func quotedPiecesOfParseErrorsAreMasked() {
        #expect(SecretScrubber.maskQuoted(#"missing "=" after "secret" in connection info string"#)
            == #"missing "***" after "***" in connection info string"#)
        #expect(SecretScrubber.maskQuoted(#"unterminated "quote"#) == #"unterminated "***"#)
    }

    @Test func argumentsWithConnectionStrings() {
        let scrubber = SecretScrubber(arguments: [
            "probe", "--database-url=postgresql://u:flagpw@h/db", "postgresql://u:barepw@h/db", "password=kvpw",
        ])
        #expect(scrubber.scrub("flagpw barepw kvpw") == "*** *** ***")
    }
}

/// Found by FuzzTests: a password next to a combining mark fused into one Character with its
/// neighbour, and a Character-wise search missed it.
@Suite struct SecretScrubberGraphemeTests {
    @Test func passwordsThatStartWithACombiningMark() {
        let connection = "postgresql://u:\u{301}pw-9f3@db/app"
        #expect(SecretScrubber.passwords(in: connection) == ["\u{301}pw-9f3"])
        let scrubber = SecretScrubber(connectionString: connection)
        #expect(scrubber.scrub("u:\u{301}pw-9f3 failed") == "u:*** failed")
    }

    @Test func aMessageThatJoinsTheNextCharacterToThePassword() {
        let scrubber = SecretScrubber(secrets: ["pw-9f3"])
        #expect(scrubber.scrub("bad pw-9f3\u{301} here") == "bad ***\u{301} here")
    }

    @Test func aQuoteFollowedByACombiningMark() {
        #expect(SecretScrubber.maskQuoted("after \"\u{301}pw-9f3\" in") == "after \"***\" in")
    }

    @Test func aQuotedPieceThatHoldsAQuoteIsMaskedWhole() {
        let input = "post\"gres://app:pw-9f3@h/db"
        let message = "missing \"=\" after \"post\"gres://app:pw-9f3@h/db\" in connection info string"
        #expect(SecretScrubber.maskQuoted(message, input: input) == "missing \"***\" after \"***\" in connection info string")
    }

    @Test func keyValuePasswordsAfterAJoiner() {
        #expect(SecretScrubber.passwords(in: "host=db password=\u{200D}pw-9f3 user=x") == ["\u{200D}pw-9f3"])
    }
}
