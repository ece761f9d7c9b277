/// Models, training, data sets, partitioners and delta codecs. Needs no networking.
public enum Learner {}
