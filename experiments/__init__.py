"""The absl binaries. Importing any of them first turns off gRPC's fork handlers (unless the environment says
otherwise): the TFF worker is started by fork + exec, and gRPC's handlers in the forked child crashed it during
start-up (SIGSEGV in cygrpc) on a loaded machine. It must be set before TFF imports gRPC."""

import os

os.environ.setdefault('GRPC_ENABLE_FORK_SUPPORT', 'false')
