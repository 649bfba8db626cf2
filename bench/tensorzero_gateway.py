"""Starts TensorZero's gateway from its Python wheel (the gateway is built into
the wheel's native module) and prints its OpenAI-compatible base URL.
Used by bench/run.py for the peers' rows; observability is off in the config.

usage: tensorzero_gateway.py CONFIG.toml"""

import sys
import time

import tensorzero

gateway = tensorzero._start_http_gateway(
    config_file=sys.argv[1], clickhouse_url=None, postgres_url=None, valkey_url=None, async_setup=False
)
print(gateway.base_url, flush=True)
while True:
    time.sleep(3600)
