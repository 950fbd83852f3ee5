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

inst.snapshots.create("s0", wait=True)
inst.execute(["sh", "-c", "echo after > /root/after"])
assert [s.name for s in inst.snapshots.all()] == ["s0"]
snap = inst.snapshots.get("s0")
snap.rename("s1", wait=True)
assert [s.name for s in inst.snapshots.all()] == ["s1"]
inst.restore_snapshot("s1", wait=True)
r = inst.execute(["sh", "-c", "ls /root/after 2>/dev/null || echo gone"])
assert r.stdout.strip() == "gone", r
print("ok snapshots")

inst.stop(wait=True)
inst = c.instances.get("py1")
assert inst.status == "Stopped", inst.status
print("ok stop")

# Files of a stopped instance.
inst.files.put("/root/stopped.txt", b"written while stopped")
assert inst.files.get("/root/stopped.txt") == b"written while stopped"
assert inst.files.get("/root/blob.bin") == data
print("ok stopped files")

inst.rename("py2", wait=True)
names = [i.name for i in c.instances.all()]
assert "py2" in names and "py1" not in names, names
inst = c.instances.get("py2")
assert [s.name for s in inst.snapshots.all()] == ["s1"]
print("ok rename")

# Profiles: create with config, used by an instance, refused delete while in use.
p = c.profiles.create("pyprof", config={"limits.memory": "64MiB"}, devices={})
assert c.profiles.get("pyprof").config["limits.memory"] == "64MiB"
inst.profiles = ["default", "pyprof"]
inst.save(wait=True)
inst = c.instances.get("py2")
assert inst.expanded_config.get("limits.memory") == "64MiB", inst.expanded_config
try:
    c.profiles.get("pyprof").delete()
    raise AssertionError("a profile in use was deleted")
except pylxd.exceptions.LXDAPIException:
    pass
inst.profiles = ["default"]
inst.save(wait=True)
c.profiles.get("pyprof").delete()
assert "pyprof" not in [p.name for p in c.profiles.all()]
print("ok profiles")

inst.delete(wait=True)
assert "py2" not in [i.name for i in c.instances.all()]
print("ok delete")

# An image from a tarball whose member names start with "/" (as Python's tarfile writes
# them when told to): the slash is stripped, as GNU tar and LXD do.
import io
import tarfile
import time

buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w:gz") as tar:
    def add(name, data, mode=0o644, kind=tarfile.REGTYPE):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = mode
        info.type = kind
        info.mtime = int(time.time())
        tar.addfile(info, io.BytesIO(data))
    meta = b"architecture: x86_64\ncreation_date: %d\nproperties:\n  os: pytest\n" % int(time.time())
    add("/metadata.yaml", meta)
    add("/rootfs", b"", 0o755, tarfile.DIRTYPE)
    add("/rootfs/etc", b"", 0o755, tarfile.DIRTYPE)
    add("/rootfs/etc/hello", b"from python\n")
img = c.images.create(buf.getvalue(), wait=True)
assert img.properties.get("os") == "pytest", img.properties
pyimg = c.instances.create(
    {"name": "py3", "source": {"type": "image", "fingerprint": img.fingerprint}}, wait=True
)
assert pyimg.files.get("/etc/hello") == b"from python\n"
pyimg.delete(wait=True)
img.delete(wait=True)
print("ok image")

# Storage: pools and custom volumes through pylxd's storage API.
pool = c.storage_pools.create({"name": "pypool", "driver": "dir", "config": {}})
assert "pypool" in [p.name for p in c.storage_pools.all()]
assert c.storage_pools.get("pypool").driver == "dir"
assert c.storage_pools.get("default").driver == "dir"
res = pool.resources.get()
assert res.space["total"] > 0, res.space
vol = pool.volumes.create({"name": "pyvol", "type": "custom", "config": {}})
assert "pyvol" in [v.name for v in pool.volumes.all() if v.type == "custom"]
vol = pool.volumes.get("custom", "pyvol")
vol.put({"description": "from pylxd", "config": {}})
assert pool.volumes.get("custom", "pyvol").description == "from pylxd"
vol.delete()
assert "pyvol" not in [v.name for v in pool.volumes.all()]
pool.delete()
assert "pypool" not in [p.name for p in c.storage_pools.all()]
print("ok storage")
