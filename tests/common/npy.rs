//! Minimal `.npy` reader for tests: little-endian, C-order arrays of f32, f16, u8, i64 (and f64,
//! i32), returned as f64/i64-free typed vectors with their shape.
#![allow(dead_code)]

use std::path::Path;

/// Element data of an `.npy` array.
#[derive(Debug, Clone, PartialEq)]
pub enum NpyData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    /// Raw IEEE half bits.
    F16(Vec<u16>),
    U8(Vec<u8>),
    I32(Vec<i32>),
    I64(Vec<i64>),
}

/// An `.npy` array: shape and data.
#[derive(Debug, Clone, PartialEq)]
pub struct Npy {
    pub shape: Vec<usize>,
    pub data: NpyData,
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = if exp == 0 {
        if man == 0 {
            sign
        } else {
            // subnormal: value = man * 2^-24
            let v = man as f32 * (1.0 / 16_777_216.0);
            return if sign != 0 { -v } else { v };
        }
    } else if exp == 31 {
        sign | 0x7f80_0000 | (man << 13)
    } else {
        sign | ((exp + 127 - 15) << 23) | (man << 13)
    };
    f32::from_bits(bits)
}

impl Npy {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// The data as f32 (converting f16/f64/integers).
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            NpyData::F32(v) => v.clone(),
            NpyData::F64(v) => v.iter().map(|&x| x as f32).collect(),
            NpyData::F16(v) => v.iter().map(|&x| f16_to_f32(x)).collect(),
            NpyData::U8(v) => v.iter().map(|&x| x as f32).collect(),
            NpyData::I32(v) => v.iter().map(|&x| x as f32).collect(),
            NpyData::I64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    pub fn read(path: impl AsRef<Path>) -> Result<Npy, String> {
        let path = path.as_ref();
        let b = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Npy::parse(&b).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(b: &[u8]) -> Result<Npy, String> {
        if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
            return Err("not an .npy file".into());
        }
        let major = b[6];
        let (hlen, start) = match major {
            1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
            2 | 3 => {
                if b.len() < 12 {
                    return Err("truncated header".into());
                }
                (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12)
            }
            v => return Err(format!("unsupported .npy version {v}")),
        };
        let header = std::str::from_utf8(b.get(start..start + hlen).ok_or("truncated header")?)
            .map_err(|_| "header is not UTF-8")?;
        let field = |key: &str| -> Result<&str, String> {
            let i = header.find(&format!("'{key}'")).ok_or(format!("no {key} in header"))?;
            Ok(header[i + key.len() + 2..].trim_start().trim_start_matches(':').trim_start())
        };
        let descr = field("descr")?;
        let descr = descr[1..].split('\'').next().ok_or("bad descr")?.to_string();
        if field("fortran_order")?.starts_with("True") {
            return Err("Fortran-order arrays are not supported".into());
        }
        let shape_s = field("shape")?;
        let shape_s = &shape_s[1..shape_s.find(')').ok_or("bad shape")?];
        let shape: Vec<usize> = shape_s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<usize>().map_err(|e| format!("bad shape: {e}")))
            .collect::<Result<_, _>>()?;
        let n: usize = shape.iter().product();
        let body = &b[start + hlen..];
        let need = |size: usize| -> Result<&[u8], String> {
            body.get(..n * size).ok_or_else(|| format!("data truncated: need {} bytes, have {}", n * size, body.len()))
        };
        let data = match descr.as_str() {
            "<f4" => {
                NpyData::F32(need(4)?.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect())
            }
            "<f8" => {
                NpyData::F64(need(8)?.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect())
            }
            "<f2" => NpyData::F16(need(2)?.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect()),
            "|u1" | "<u1" => NpyData::U8(need(1)?.to_vec()),
            "<i4" => {
                NpyData::I32(need(4)?.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap())).collect())
            }
            "<i8" => {
                NpyData::I64(need(8)?.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect())
            }
            other => return Err(format!("unsupported dtype {other}")),
        };
        Ok(Npy { shape, data })
    }
}
