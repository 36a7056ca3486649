"""Aggregation factories (all `tff.aggregators` factories) and the `--aggregator` spec parser.

Python composition, client to server from outside in:

    from tff_fl import aggregators as agg
    factory = agg.clip(norm=1.0, inner=agg.trimmed_mean(beta=0.1))
    process = tff.learning.algorithms.build_weighted_fed_avg(model_fn, opt_fn, model_aggregator=factory)

The same from a flag: `agg.build_aggregator('clip(1.0)>trimmed_mean(0.1)')`.
"""

from tff_fl.aggregators.clipping import adaptive_clip
from tff_fl.aggregators.clipping import adaptive_zeroing
from tff_fl.aggregators.clipping import clip
from tff_fl.aggregators.clipping import zeroing
from tff_fl.aggregators.compression import quantize
from tff_fl.aggregators.compression import topk
from tff_fl.aggregators.robust import krum
from tff_fl.aggregators.robust import median
from tff_fl.aggregators.robust import multi_krum
from tff_fl.aggregators.robust import trimmed_mean
from tff_fl.aggregators.secagg.factory import secagg_mean
from tff_fl.aggregators.secagg.factory import secagg_plus_mean
from tff_fl.aggregators.secure import secure_mean
from tff_fl.aggregators.secure import secure_sum
from tff_fl.aggregators.spec import allowed_spellings
from tff_fl.aggregators.spec import build_aggregator
from tff_fl.aggregators.spec import describe
from tff_fl.aggregators.spec import register_stage
from tff_fl.aggregators.spec import Stage
from tff_fl.aggregators.spec import STAGES
from tff_fl.aggregators.weighting import accumulate_loss_stats
from tff_fl.aggregators.weighting import client_weighted
from tff_fl.aggregators.weighting import example_count
from tff_fl.aggregators.weighting import inverse_loss_variance
from tff_fl.aggregators.weighting import LOSS_STATS_TYPE
from tff_fl.aggregators.weighting import loss_stats_zero
from tff_fl.aggregators.weighting import mean
from tff_fl.aggregators.weighting import uniform_mean
