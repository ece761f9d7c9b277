import Testing
@testable import Gossip
