import Testing
@testable import Gossip

/// Drivers turn every scheduled duration into nanoseconds: whole ones, rounded toward zero,
/// clamped to `Int64` at both ends.
@Test func durationNanosecondsClamped_roundsTowardZeroAndClampsAtBothEnds() {
    #expect(Duration.milliseconds(200).nanosecondsClamped == 200_000_000)
    #expect(Duration.nanoseconds(-7).nanosecondsClamped == -7)
    #expect(Duration(attoseconds: 1_999_999_999).nanosecondsClamped == 1)
    #expect(Duration(attoseconds: -1_999_999_999).nanosecondsClamped == -1)
    #expect((Duration.seconds(-3) + .nanoseconds(250)).nanosecondsClamped == -2_999_999_750)
    let largest = Duration.seconds(9_223_372_036) + .nanoseconds(854_775_807)
    #expect(largest.nanosecondsClamped == .max)
    #expect((largest + .nanoseconds(1)).nanosecondsClamped == .max)
    #expect(Duration.seconds(Int64.max).nanosecondsClamped == .max)
    #expect((Duration.seconds(-9_223_372_036) - .nanoseconds(854_775_808)).nanosecondsClamped == .min)
    #expect(Duration.seconds(Int64.min).nanosecondsClamped == .min)
}
