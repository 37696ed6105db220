"""Symbolising drop locations from /proc/kallsyms text."""

import pytest

from tracer.errors import KernelFeatureError
from tracer.kernel.kallsyms import Kallsyms, LazyKallsyms, Symbol

# Shaped like the real file: unsorted module part, aliases at one address,
# data symbols that must be ignored, a weak function, a module symbol.
FIXTURE = """\
0000000000000000 A fixed_percpu_data
ffffffff81000000 T _stext
ffffffff81000000 T _text
ffffffff81207610 W abort
ffffffff8215b250 T __pfx_br_handle_frame_finish
ffffffff8215b260 T br_handle_frame_finish
ffffffff8215b800 t br_handle_frame
ffffffff82400000 D init_net
ffffffff8220bb08 T _etext
ffffffffc0a05000 t vxlan_rcv\t[vxlan]
ffffffffc0a01000 t vxlan_xmit\t[vxlan]
ffffffffc0a02000 b vxlan_data\t[vxlan]
"""


def zeroed(text: str) -> str:
    """What an unprivileged reader sees (kptr_restrict): every address 0."""
    return "\n".join("0" * 16 + line[16:] for line in text.splitlines()) + "\n"


@pytest.fixture
def ks():
    return Kallsyms.parse(FIXTURE)


def test_keeps_only_text_symbols(ks):
    # 3 kernel T + W + 2 T + t + _etext + 2 module t; A, D and b are dropped.
    assert len(ks) == 9
    assert ks.usable


def test_symbolize_inside_function(ks):
    s = ks.symbolize(0xFFFFFFFF8215B260 + 0x1A2)
    assert s == Symbol("br_handle_frame_finish", 0x1A2, None)
    assert s.location == "br_handle_frame_finish+0x1a2"
    assert s.function == "br_handle_frame_finish"
    assert str(s) == "br_handle_frame_finish+0x1a2"


def test_symbolize_exact_start_and_next_symbol(ks):
    assert ks.symbolize(0xFFFFFFFF8215B260).location == "br_handle_frame_finish+0x0"
    assert ks.symbolize(0xFFFFFFFF8215B800 + 8).location == "br_handle_frame+0x8"
    assert ks.symbolize(0xFFFFFFFF81207610 + 4).name == "abort"


def test_aliases_keep_file_order(ks):
    assert ks.symbolize(0xFFFFFFFF81000010).location == "_stext+0x10"


def test_module_symbol_and_unsorted_input(ks):
    s = ks.symbolize(0xFFFFFFFFC0A05000 + 0x40)
    assert (s.name, s.offset, s.module) == ("vxlan_rcv", 0x40, "vxlan")
    assert s.location == "vxlan_rcv+0x40"
    assert str(s) == "vxlan_rcv+0x40 [vxlan]"
    # The bss symbol between them is not text: vxlan_xmit covers 0x...2000.
    assert ks.symbolize(0xFFFFFFFFC0A02010).location == "vxlan_xmit+0x1010"


def test_address_below_all_symbols(ks):
    s = ks.symbolize(0x1234)
    assert s == Symbol("0x1234", 0, None)
    assert s.location == "0x1234"


def test_zeroed_file_is_not_usable():
    ks = Kallsyms.parse(zeroed(FIXTURE))
    assert not ks.usable
    assert len(ks) == 9  # names are there, addresses are not
    s = ks.symbolize(0xFFFFFFFF8215B300)
    assert (s.name, s.offset, s.location) == ("0xffffffff8215b300", 0, "0xffffffff8215b300")


def test_empty_text():
    ks = Kallsyms.parse("")
    assert not ks.usable and len(ks) == 0
    assert ks.symbolize(16).name == "0x10"


def test_symbol_is_frozen():
    s = Symbol("f", 1)
    with pytest.raises(AttributeError):
        s.offset = 2  # type: ignore[misc]


def test_load_from_file_and_missing_file(tmp_path):
    p = tmp_path / "kallsyms"
    p.write_text(FIXTURE)
    assert Kallsyms.load(str(p)).symbolize(0xFFFFFFFF8215B262).location == \
        "br_handle_frame_finish+0x2"
    with pytest.raises(KernelFeatureError):
        Kallsyms.load(str(tmp_path / "absent"))


def test_parses_a_kernel_sized_table():
    lines = []
    for i in range(150_000):
        kind = "tTtD"[i % 4]
        suffix = "\t[mod%d]" % (i % 7) if i % 5 == 0 else ""
        lines.append("%016x %s fn_%d%s" % (0xFFFFFFFF81000000 + 16 * i, kind, i, suffix))
    text = "\n".join(lines) + "\n"
    ks = Kallsyms.parse(text)
    assert len(ks) == 112_500
    assert ks.symbolize(0xFFFFFFFF81000000 + 16 * 149_998 + 3).location == "fn_149998+0x3"


def test_addresses_visible_reads_the_first_line(tmp_path):
    shown, hidden = tmp_path / "shown", tmp_path / "hidden"
    shown.write_text("ffffffff81000000 T _stext\n")
    hidden.write_text("0000000000000000 T _stext\n")
    assert Kallsyms.addresses_visible(str(shown)) is True
    assert Kallsyms.addresses_visible(str(hidden)) is False
    assert Kallsyms.addresses_visible(str(tmp_path / "none")) is False


def test_lazy_kallsyms_reads_the_file_at_the_first_lookup(tmp_path):
    ks = tmp_path / "kallsyms"
    lazy = LazyKallsyms(str(ks))          # the file does not exist yet: nothing read
    ks.write_text("ffffffff81000000 T _stext\nffffffff81000100 t br_forward\t[bridge]\n")
    sym = lazy.symbolize(0xffffffff81000104)
    assert (sym.name, sym.offset, sym.module) == ("br_forward", 4, "bridge")
    assert lazy.usable and len(lazy) == 2
