// Reads what a prebuild needs from the system that loads it: the ELF machine it runs on and the
// symbol versions it asks of each shared library (.gnu.version_r, what `objdump -p` lists under
// "Version References"). Read from the bytes, so no binutils for the target is needed.

/** e_machine of the architectures prebuilds are named after (elf(5)). */
export const ELF_MACHINE = { x64: 62, arm64: 183, ia32: 3, arm: 40 };

/**
 * The newest symbol versions a prebuild may need: those of Node's own official Linux binaries
 * (Node 20 to 26 need glibc 2.28, GLIBCXX_3.4.21, CXXABI_1.3.9 at most), so that the prebuild
 * loads wherever the official `node` runs. A newer one makes dlopen fail with
 * "version `GLIBC_2.34' not found" on, say, RHEL 8 or Debian 10.
 */
export const NEWEST_VERSION = { GLIBC: '2.28', GLIBCXX: '3.4.21', CXXABI: '1.3.9', GCC: '4.2.0' };

const SHT_GNU_VERNEED = 0x6ffffffe;

/**
 * `{ machine, needs }` of a 64-bit little-endian ELF file: `needs` maps each library the file
 * links (DT_NEEDED with versions) to the symbol version names it asks of it.
 * @param {Uint8Array} bytes
 */
export function elfInfo(bytes) {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buf.length < 64 || buf.toString('latin1', 0, 4) !== '\x7fELF') throw new Error('not an ELF file');
  if (buf[4] !== 2 || buf[5] !== 1) throw new Error('not a 64-bit little-endian ELF file');
  const machine = buf.readUInt16LE(18);
  const shoff = Number(buf.readBigUInt64LE(0x28));
  const shentsize = buf.readUInt16LE(0x3a);
  const shnum = buf.readUInt16LE(0x3c);
  const section = (i) => {
    const at = shoff + i * shentsize;
    return {
      type: buf.readUInt32LE(at + 4),
      offset: Number(buf.readBigUInt64LE(at + 24)),
      size: Number(buf.readBigUInt64LE(at + 32)),
      link: buf.readUInt32LE(at + 40),
      info: buf.readUInt32LE(at + 44),
    };
  };
  const needs = {};
  for (let i = 0; i < shnum; i++) {
    const s = section(i);
    if (s.type !== SHT_GNU_VERNEED) continue;
    const strtab = section(s.link).offset;
    const str = (at) => buf.toString('latin1', strtab + at, buf.indexOf(0, strtab + at));
    // Elf64_Verneed: vn_version u16, vn_cnt u16, vn_file u32, vn_aux u32, vn_next u32;
    // Elf64_Vernaux: vna_hash u32, vna_flags u16, vna_other u16, vna_name u32, vna_next u32.
    let need = s.offset;
    for (let n = 0; n < s.info; n++) {
      const versions = (needs[str(buf.readUInt32LE(need + 4))] ??= []);
      let aux = need + buf.readUInt32LE(need + 8);
      for (let a = 0; a < buf.readUInt16LE(need + 2); a++) {
        versions.push(str(buf.readUInt32LE(aux + 8)));
        aux += buf.readUInt32LE(aux + 12);
      }
      need += buf.readUInt32LE(need + 12);
    }
  }
  return { machine, needs };
}

/** -1, 0 or 1 as dotted version `a` is older than, the same as or newer than `b`. */
function compareVersions(a, b) {
  const x = a.split('.').map(Number);
  const y = b.split('.').map(Number);
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const d = (x[i] ?? 0) - (y[i] ?? 0);
    if (d) return Math.sign(d);
  }
  return 0;
}

/** The symbol versions in `needs` newer than NEWEST_VERSION allows, as 'libc.so.6: GLIBC_2.34'. */
export function tooNew(needs) {
  const found = [];
  for (const [lib, versions] of Object.entries(needs)) {
    for (const v of versions) {
      const m = /^([A-Z]+)_([0-9.]+)$/.exec(v);
      if (m && NEWEST_VERSION[m[1]] && compareVersions(m[2], NEWEST_VERSION[m[1]]) > 0) found.push(`${lib}: ${v}`);
    }
  }
  return found;
}
