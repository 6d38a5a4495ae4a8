"""Stage 1, load: the one Keras-generation choice (`keras_compat`), datasets (`data`) and what a classifier's
inputs and heads are (`classifier`)."""
