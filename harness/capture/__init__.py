"""Capture: the guest's, dom0's and Xen's views of a run, turned into one
ordered trace of schema-v1 events (docs/trace-schema.md) for the model.

- guest_trace: lines of the xenrig_trace module (grant API, blkif rings)
- dom0_agent:  GNTTABOPs issued from dom0 by harness/remote/gntagent.py
- xen_dump:    `xl debug-keys g` dumps at quiet points
- session:     merging the three into one trace file with a header
"""
