@_exported import DeterministicRandom
