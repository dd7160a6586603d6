#!/usr/bin/env python3
"""Writes the IMA fuzz seeds (tests/verify/corpus/ima/tmpl-*.ascii|.bin): one small list per
template, ascii and binary, with template hashes computed here by hashlib over the kernel's
template data layout (see attestation/verify/ima_log.h). Run from the repository root:
    python3 tests/verify/data/ima/gen_seeds.py
"""
import hashlib
import os
import struct

OUT = "tests/verify/corpus/ima"


def field(b):
    return struct.pack("<I", len(b)) + b


def dng(algo, digest):
    return algo.encode() + b":\0" + digest


def s(name):
    return name.encode() + b"\0"


def u32(v):
    return struct.pack("<I", v)


def u16(v):
    return struct.pack("<H", v)


FILE = hashlib.sha256(b"file").digest()
BOOT = ("ima-ng", [dng("sha256", hashlib.sha256(b"boot").digest()), s("boot_aggregate")],
        ["sha256:" + hashlib.sha256(b"boot").hexdigest(), "boot_aggregate"])

# (template, field data list (as the kernel holds it), ascii tokens)
ENTRIES = {
    "ima-buf": ("ima-buf", [dng("sha256", hashlib.sha256(b"ro quiet").digest()),
                            s("kexec-cmdline"), b"ro quiet"],
                ["sha256:" + hashlib.sha256(b"ro quiet").hexdigest(), "kexec-cmdline",
                 b"ro quiet".hex()]),
    "ima-modsig": ("ima-modsig", [dng("sha256", FILE), s("/lib/modules/x.ko"), b"",
                                  dng("sha256", FILE), b"\x30\x82\x01\x00modsig"],
                   ["sha256:" + FILE.hex(), "/lib/modules/x.ko", "", "sha256:" + FILE.hex(),
                    b"\x30\x82\x01\x00modsig".hex()]),
    "evm-sig": ("evm-sig", [dng("sha256", FILE), s("/usr/bin/evm"), b"\x05\x02evmsig",
                            b"security.ima|security.selinux\0", u32(10) + u32(5),
                            b"\x03" * 10 + b"s0:x\0", u32(0), u32(1000), u16(0o100755)],
                ["sha256:" + FILE.hex(), "/usr/bin/evm", b"\x05\x02evmsig".hex(),
                 "security.ima|security.selinux", (u32(10) + u32(5)).hex(),
                 (b"\x03" * 10 + b"s0:x\0").hex(), "0", "1000", str(0o100755)]),
    "ima-ngv2": ("ima-ngv2", [b"ima:sha256:\0" + FILE, s("/usr/bin/ngv2")],
                 ["ima:sha256:" + FILE.hex(), "/usr/bin/ngv2"]),
    "ima-sigv2": ("ima-sigv2", [b"verity:sha256:\0" + FILE, s("/usr/bin/sigv2"), b"\x06\x02sig"],
                  ["verity:sha256:" + FILE.hex(), "/usr/bin/sigv2", b"\x06\x02sig".hex()]),
    "custom": ("d-ng|n-ng|iuid|imode", [dng("sha256", FILE), s("/etc/custom"), u32(0),
                                        u16(0o100644)],
               ["sha256:" + FILE.hex(), "/etc/custom", "0", str(0o100644)]),
}


def line(pcr, tmpl, fields, toks):
    data = b"".join(field(f) for f in fields)
    h = hashlib.sha1(data).digest()
    asc = "%2d %s %s %s\n" % (pcr, h.hex(), tmpl, " ".join(toks))
    binary = u32(pcr) + h + u32(len(tmpl)) + tmpl.encode() + u32(len(data)) + data
    return asc, binary


def legacy(pcr, digest, name):
    data = digest + name.encode().ljust(256, b"\0")
    h = hashlib.sha1(data).digest()
    asc = "%2d %s ima %s %s\n" % (pcr, h.hex(), digest.hex(), name)
    binary = (u32(pcr) + h + u32(3) + b"ima" + digest + u32(len(name)) + name.encode())
    return asc, binary


def write(name, parts):
    with open(os.path.join(OUT, name + ".ascii"), "w") as f:
        f.write("".join(p[0] for p in parts))
    with open(os.path.join(OUT, name + ".bin"), "wb") as f:
        f.write(b"".join(p[1] for p in parts))


for name, (tmpl, fields, toks) in ENTRIES.items():
    write("tmpl-" + name, [line(10, *BOOT), line(10, tmpl, fields, toks)])
write("tmpl-ima-legacy", [legacy(10, hashlib.sha1(b"boot").digest(), "boot_aggregate"),
                          legacy(10, hashlib.sha1(b"file").digest(), "/usr/bin/legacy")])
# Several PCRs (policy rules with pcr=11, pcr=5: printed " 5").
write("multi-pcr", [line(10, *BOOT), line(11, *ENTRIES["ima-buf"]), line(5, *ENTRIES["ima-ngv2"]),
                    line(10, *ENTRIES["evm-sig"])])
