/// Deterministic discrete-event simulator that runs real protocol nodes in virtual time.
public enum Simulation {}
