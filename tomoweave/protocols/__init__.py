"""Built-in protocols, one module per stage. Each reads like a form: parameters, inputs, outputs,
citations, and a ``process`` that calls algorithms."""
