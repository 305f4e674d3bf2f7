//! `tar` on the container's filesystem: `c` writes a ustar archive to stdout (or `-f FILE`), `x`
//! reads one from stdin (or `-f FILE`), `t` lists it; `-C DIR` changes directory first, `v` lists
//! names, `m`/`o`/`p` are accepted. This is what `kubectl cp` runs through exec
//! (`tar cf - PATH`, `tar xmf - -C DIR`).

use super::shell::{Io, Shell};
use super::vfs::{normalize, Kind};

const BLOCK: usize = 512;

fn octal(field: &mut [u8], n: u64) {
    let s = format!("{:0width$o}", n, width = field.len() - 1);
    let b = s.as_bytes();
    let n = field.len() - 1;
    let start = b.len().saturating_sub(n);
    field[..n].copy_from_slice(&b[start..]);
    field[n] = 0;
}

/// One ustar header (names up to 100 bytes, or 155+100 split at a `/`).
fn header(name: &str, dir: bool, size: usize) -> Option<[u8; BLOCK]> {
    let mut h = [0u8; BLOCK];
    let name = if dir { format!("{}/", name.trim_end_matches('/')) } else { name.to_string() };
    let (prefix, base) = if name.len() <= 100 {
        ("", name.as_str())
    } else {
        let cut = name[..name.len().min(156)].rfind('/')?;
        (&name[..cut], &name[cut + 1..])
    };
    if base.len() > 100 || prefix.len() > 155 {
        return None;
    }
    h[..base.len()].copy_from_slice(base.as_bytes());
    octal(&mut h[100..108], if dir { 0o755 } else { 0o644 });
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size as u64);
    octal(&mut h[136..148], jiff::Timestamp::now().as_second().max(0) as u64);
    h[156] = if dir { b'5' } else { b'0' };
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[265..269].copy_from_slice(b"root");
    h[297..301].copy_from_slice(b"root");
    h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    Some(h)
}

fn field_str(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn parse_octal(b: &[u8]) -> Option<usize> {
    let s = field_str(b);
    let s = s.trim();
    if s.is_empty() {
        return Some(0);
    }
    usize::from_str_radix(s, 8).ok()
}

/// An archive member: its name, and its data (None for a directory).
pub type Entry = (String, Option<Vec<u8>>);

/// The entries of an archive: (name, None for a directory / Some(data) for a file).
pub fn read_archive(data: &[u8]) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    let mut long_name: Option<String> = None;
    if !data.is_empty() && data.len() < BLOCK {
        return Err("short read".into());
    }
    while i + BLOCK <= data.len() {
        let h = &data[i..i + BLOCK];
        if h.iter().all(|b| *b == 0) {
            break;
        }
        let size = parse_octal(&h[124..136]).ok_or("invalid tar header checksum")?;
        let stored: Option<usize> = parse_octal(&h[148..156]);
        let sum: usize =
            h.iter().enumerate().map(|(k, b)| if (148..156).contains(&k) { 32 } else { usize::from(*b) }).sum();
        if stored != Some(sum) {
            return Err("invalid tar header checksum".into());
        }
        let prefix = field_str(&h[345..500]);
        let base = field_str(&h[..100]);
        let mut name =
            if prefix.is_empty() || &h[257..262] != b"ustar" { base } else { format!("{prefix}/{base}") };
        let kind = h[156];
        i += BLOCK;
        let body = data.get(i..i + size).ok_or("short read")?.to_vec();
        i += size.div_ceil(BLOCK) * BLOCK;
        match kind {
            b'L' => {
                long_name = Some(field_str(&body));
                continue;
            }
            b'x' | b'g' => continue,
            _ => {}
        }
        if let Some(l) = long_name.take() {
            name = l;
        }
        match kind {
            b'5' => out.push((name, None)),
            b'0' | 0 | b'7' => out.push((name, Some(body))),
            _ => {}
        }
    }
    Ok(out)
}

pub async fn tar(sh: &mut Shell, args: &[String], io: &Io) -> i32 {
    let Some(first) = args.first() else {
        io.err("tar: no command specified\n").await;
        return 1;
    };
    let mut flags: String = first.trim_start_matches('-').to_string();
    let mut rest: Vec<String> = Vec::new();
    let mut file: Option<String> = None;
    let mut dir: Option<String> = None;
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        if a == "-C" {
            dir = it.next().cloned();
        } else if a == "-f" {
            file = it.next().cloned();
        } else if a.starts_with('-') && a.len() > 1 {
            flags.push_str(&a[1..]);
        } else {
            rest.push(a.clone());
        }
    }
    if flags.contains('f') && file.is_none() && !rest.is_empty() {
        file = Some(rest.remove(0));
    }
    let file = file.filter(|f| f != "-");
    let base = dir.map(|d| sh.abs(&d)).unwrap_or_else(|| sh.cwd.clone());
    let verbose = flags.contains('v');
    if flags.contains('c') {
        let mut archive = Vec::new();
        let mut code = 0;
        for p in &rest {
            let abs = normalize(&base, p);
            let walk = match sh.sb.fs.walk(&abs) {
                Ok(w) => w,
                Err(e) => {
                    io.err(&format!("tar: {p}: {e}\n")).await;
                    code = 1;
                    continue;
                }
            };
            for (path, kind) in walk {
                // Member names are relative, as given (a leading `/` is removed, as tar does).
                let rel = format!("{}{}", p.trim_start_matches('/').trim_end_matches('/'), &path[abs.len()..]);
                let rel = if rel.is_empty() { ".".to_string() } else { rel };
                let (dir, data) = match kind {
                    Kind::Dir => (true, Vec::new()),
                    Kind::File(_) => {
                        (false, sh.sb.fs.read(&path).map(|d| d.as_ref().clone()).unwrap_or_default())
                    }
                };
                let Some(h) = header(&rel, dir, data.len()) else {
                    io.err(&format!("tar: {rel}: file name is too long\n")).await;
                    code = 1;
                    continue;
                };
                if verbose {
                    io.err(&format!("{rel}\n")).await;
                }
                archive.extend_from_slice(&h);
                archive.extend_from_slice(&data);
                archive.resize(archive.len().div_ceil(BLOCK) * BLOCK, 0);
            }
        }
        archive.extend_from_slice(&[0u8; BLOCK * 2]);
        let written = match &file {
            Some(f) => sh.sb.fs.write(&sh.abs(f), &archive, false).is_ok(),
            None => io.stdout.write(&archive).await.is_ok(),
        };
        return if written { code } else { 1 };
    }
    if flags.contains('x') || flags.contains('t') {
        let data = match &file {
            Some(f) => match sh.sb.fs.read(&sh.abs(f)) {
                Ok(d) => d.as_ref().clone(),
                Err(e) => {
                    io.err(&format!("tar: can't open '{f}': {e}\n")).await;
                    return 1;
                }
            },
            None => io.stdin.all().await,
        };
        let entries = match read_archive(&data) {
            Ok(e) => e,
            Err(e) => {
                io.err(&format!("tar: {e}\n")).await;
                return 1;
            }
        };
        if flags.contains('t') {
            let names: String = entries.iter().map(|(n, _)| format!("{n}\n")).collect();
            io.out(&names).await;
            return 0;
        }
        for (name, body) in entries {
            let target = normalize(&base, name.trim_start_matches('/'));
            if verbose {
                io.out(&format!("{name}\n")).await;
            }
            let r = match body {
                None => sh.sb.fs.mkdir(&target, true),
                Some(d) => {
                    if let Some((parent, _)) = target.rsplit_once('/') {
                        let _ = sh.sb.fs.mkdir(if parent.is_empty() { "/" } else { parent }, true);
                    }
                    sh.sb.fs.write(&target, &d, false)
                }
            };
            if let Err(e) = r {
                io.err(&format!("tar: can't create '{name}': {e}\n")).await;
                return 1;
            }
        }
        return 0;
    }
    io.err("tar: need exactly one of 'c', 'x' or 't'\n").await;
    1
}
