#!/usr/bin/env python3
"""pylxd against ctld (LXD_DIR points at its state dir): the flow tests/tests/compat.rs runs.

Prints one `ok <step>` line per step; any failure raises (non-zero exit)."""
import pylxd

c = pylxd.Client()
assert c.host_info["api_version"] == "1.0", c.host_info
print("ok connect")

inst = c.instances.create(
    {"name": "py1", "source": {"type": "image", "alias": "busybox"}}, wait=True
)
assert inst.name == "py1"
print("ok create")
assert "py1" in [i.name for i in c.instances.all()]
print("ok all")

inst.start(wait=True)
inst = c.instances.get("py1")
assert inst.status == "Running", inst.status
print("ok start")

r = inst.execute(["sh", "-c", "echo out; echo err >&2; exit 5"])
assert (r.exit_code, r.stdout, r.stderr) == (5, "out\n", "err\n"), r
r = inst.execute(["cat"], stdin_payload=b"payload-in")
assert (r.exit_code, r.stdout) == (0, "payload-in"), r
print("ok execute")

data = bytes(range(256)) * 64
inst.files.put("/root/blob.bin", data)
assert inst.files.get("/root/blob.bin") == data
print("ok files")

inst.stop(wait=True)
inst = c.instances.get("py1")
assert inst.status == "Stopped", inst.status
print("ok stop")

inst.delete(wait=True)
assert "py1" not in [i.name for i in c.instances.all()]
print("ok delete")
