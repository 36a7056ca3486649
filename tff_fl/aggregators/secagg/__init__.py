"""Secure aggregation as a protocol (Bonawitz et al. 2017; SecAgg+, Bell et al. 2020), simulated in the round.

  shamir    t-of-n Shamir sharing over Z_p, p = 2^31 - 1
  masking   PRG expansion of seeds to Z_{2^b} masks, simulated DH pair seeds, the pairwise sign, the SecAgg+ graph
  protocol  the client (mask, send shares) and server (sum, recover dropped clients' masks, unmask) roles
  factory   the `tff.aggregators` weighted-mean factory that runs them per client on the packed engine

The engine must pass each client's place among the sampled clients: add
`tff_fl.algorithms.secagg_input.SecAggInput(max_clients)` to the process's extensions (the `--aggregator` flag does).
"""
