"""Lab child: after HOLD seconds, delete the given devices (ending a loop's
storm) even if the test never did.  Runs inside the namespace that holds them.

usage: watchdog.py HOLD DEV [DEV ...]
"""

import subprocess
import sys
import time

time.sleep(float(sys.argv[1]))
for dev in sys.argv[2:]:
    subprocess.run(["ip", "link", "del", dev], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=30)
