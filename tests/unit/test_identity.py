"""Port identity from libvirt's runtime XML and tap owners (fixtures, no root)."""

from tracer import identity

DOMAIN = """<domstatus state='running' pid='4242'>
  <domain type='kvm' id='3'>
    <name>web01</name>
    <devices>
      <interface type='bridge'><source bridge='br-int'/><target dev='vnet3'/></interface>
      <interface type='bridge'><source bridge='br-ext'/><target dev='vnet4'/></interface>
    </devices>
  </domain>
</domstatus>"""


def test_libvirt_runtime_xml_names_the_vm(tmp_path):
    (tmp_path / "web01.xml").write_text(DOMAIN)
    (tmp_path / "broken.xml").write_text("<domstatus")
    assert identity.libvirt_interfaces(tmp_path) == {"vnet3": "web01", "vnet4": "web01"}
    assert identity.libvirt_interfaces(tmp_path / "absent") == {}


def test_tap_owner_from_fdinfo(tmp_path):
    proc = tmp_path
    for pid, comm, iff in ((100, "tincd", "t3o"), (200, "qemu-system-x86", "vnet9"), (300, "bash", None)):
        d = proc / str(pid)
        (d / "fdinfo").mkdir(parents=True)
        (d / "comm").write_text(comm + "\n")
        (d / "fdinfo" / "3").write_text("pos:\t0\nflags:\t02\n" + (f"iff:\t{iff}\n" if iff else ""))
    (proc / "self").mkdir()
    owners = identity.tap_owners({"t3o", "vnet9", "nobody"}, proc)
    assert owners == {"t3o": (100, "tincd"), "vnet9": (200, "qemu-system-x86")}
    assert identity.label("t3o", "tun", {}, owners) == "vpn tincd"
    assert identity.label("vnet9", "tun", {}, owners) == "vm pid 200"
    assert identity.label("vnet3", "tun", {"vnet3": "web01"}, owners) == "vm web01"
    assert identity.label("t9", "tun", {}, owners) == "tap, no reader"
    assert identity.label("eth1", "veth", {}, owners) == ""
