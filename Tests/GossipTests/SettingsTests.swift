import Testing
@testable import Gossip

@Suite struct SettingsTests {
    @Test(arguments: ["lan", "wan", "local"])
    func profiles_areValid(name: String) throws {
        let profile: OverlaySettings = name == "lan" ? .lan : name == "wan" ? .wan : .local
        try profile.validate()
        try PushSumAverager.Settings().validate()
    }

    @Test func overlaySettings_zeroIntervalOrMultiplier_isRefusedNamingTheSetting() {
        var s = OverlaySettings.lan
        s.membership.probeInterval = .zero
        #expect(throws: SettingsError(setting: "membership.probeInterval", value: "0.0 seconds", allowed: "a duration above zero")) {
            try s.validate()
        }
        s = .lan
        s.membership.suspicionMultiplier = 0
        #expect(throws: SettingsError(setting: "membership.suspicionMultiplier", value: "0", allowed: "at least 1")) { try s.validate() }
        s = .lan
        s.sampling.shuffleLength = 30
        #expect(throws: SettingsError(setting: "sampling.shuffleLength", value: "30", allowed: "1 to 24")) { try s.validate() }
        s = .lan
        s.discovery.rebootstrapMaxDelay = .milliseconds(10)
        #expect(throws: SettingsError.self) { try s.validate() }
        s = .lan
        s.membership.probeTimeout = .seconds(2)
        #expect(throws: SettingsError.self) { try s.validate() }
    }

    @Test func averagingSettings_outOfRange_isRefusedNamingTheSetting() {
        var a = PushSumAverager.Settings()
        a.tickInterval = .zero
        #expect(throws: SettingsError(setting: "averaging.tickInterval", value: "0.0 seconds", allowed: "a duration above zero")) {
            try a.validate()
        }
        a = PushSumAverager.Settings()
        a.shareFraction = 0
        #expect(throws: SettingsError.self) { try a.validate() }
        a.shareFraction = 1
        try? a.validate()
        a.sparseShareFraction = 1
        #expect(throws: SettingsError(setting: "averaging.sparseShareFraction", value: "1.0", allowed: "strictly between 0 and 1")) { try a.validate() }
        a.sparseShareFraction = 0.75
        a.maxInFlight = 65
        #expect(throws: SettingsError(setting: "averaging.maxInFlight", value: "65", allowed: "1 to 64")) { try a.validate() }
    }
}
