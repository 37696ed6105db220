"""Lab child: after HOLD seconds, delete the given devices (ending a loop's
storm) even if the test never did.  Runs inside the namespace that holds them.

usage: watchdog.py HOLD DEV [DEV ...]
"""

import subprocess
import sys
import time

time.sleep(float(sys.argv[1]))
# Down first, delete after, as Lab.break_loop() does: the storm stops before
# the ports are torn out from under frames in flight.
for verb in (["set", "dev"], ["del"]):
    for dev in sys.argv[2:]:
        subprocess.run(["ip", "link"] + verb + [dev] + (["down"] if verb[0] == "set" else []),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    time.sleep(0.1)
