import Testing
@testable import Learner
