"""A user module for the binary's `--plugin` (tests/experiments/test_plugins.py and the README's example).

It adds an aggregator stage, an algorithm and a component with one flag, through the public registries only.
"""

import sys

import tensorflow_federated as tff

from experiments import components
from experiments import flag_groups
from tff_fl.aggregators import spec
from tff_fl.algorithms import builders
from tff_fl.algorithms import fed_avg

# --aggregator='tff_clip(1.0)>mean': TFF's own clipping factory as a wrapper stage (a name the library lacks).
spec.register_stage('tff_clip', lambda norm, inner: tff.aggregators.clipping_factory(norm, inner), terminal=False,
                    params=(('norm', float),), help_text="L2 clip to norm with tff.aggregators.clipping_factory")

# --algorithm=fedprox_small: FedProx with a fixed proximal coefficient (a builder gets the experiment).
builders.register('fedprox_small', lambda exp: fed_avg.FedAvg(proximal_mu=0.01))


def define_flags() -> None:
  flag_groups.define_flag('string', 'plugin_example_tag', '', 'a tag the example plugin checks (test only)')


def configure(exp) -> None:
  del exp
  if flag_groups.FLAGS.plugin_example_tag not in ('', 'ok'):
    raise ValueError(f"--plugin_example_tag must be '' or ok; got '{flag_groups.FLAGS.plugin_example_tag}'.")


components.COMPONENTS.register('plugin_example', sys.modules[__name__])
