"""The action process: ``python -m loom.runtime`` runs one attempt of one remote action.

It fetches the action's spec from the control plane, unpacks the run's code bundle, imports the
task, decodes its inputs, runs it (task calls inside become child actions through the remote
controller), and reports the outputs or the error. stdout and stderr are the action's log.
"""

from ._process import run_attempt

__all__ = ["run_attempt"]
