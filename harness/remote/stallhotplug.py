#!/usr/bin/env python3
"""xenrig's block hotplug script that holds the kernel's blkback back.

libxl runs a disk's hotplug script after blkback has reached InitWait;
the stock `block` script then writes `physical-device`, which is what lets
blkback open the device and, once the frontend has published its ring,
connect.  This script succeeds at every action and writes nothing, so
blkback maps the frontend's ring and waits in InitWait for ever: a vbd
whose backend never reaches Connected (a lifecycle step, `target:
stalled`).  Detaching it goes through the toolstack as for any vbd.
"""

import sys

if __name__ == "__main__":
    sys.exit(0)
