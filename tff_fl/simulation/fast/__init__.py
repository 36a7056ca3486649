"""Fast simulation engine: packed client groups trained in one TF call per CLIENTS slot (see `engine`)."""

from tff_fl.simulation.fast.engine import build_fast_fed_avg
from tff_fl.simulation.fast.engine import FastLearningProcess
from tff_fl.simulation.fast.packing import build_client_inputs_fn
