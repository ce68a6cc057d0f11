#!/usr/bin/env bash
# A venv of its own for the peers (never the project's dependencies): storchastic 0.3.7 (needs
# entmax) and relaxit 1.2.1 from PyPI, on the machine's torch and pyro (system site-packages,
# installed with --no-deps so that no other torch is pulled in).
#
#   bash benchmarks/peers/setup.sh [VENV]        # default /tmp/relaxit-peers
#   VENV/bin/python benchmarks/peers/peer_speed.py
set -euo pipefail
VENV="${1:-/tmp/relaxit-peers}"
python3 -m venv --system-site-packages "$VENV"
"$VENV/bin/pip" install -q --no-deps "storchastic==0.3.7" "entmax==1.3" "relaxit==1.2.1" packaging
"$VENV/bin/python" -c "import storch, relaxit, torch; print('storchastic', storch.__file__, '| relaxit', relaxit.__version__ if hasattr(relaxit, '__version__') else '1.2.1', '| torch', torch.__version__)"
