//! Attribution cases from files: one CSV of leaves per case and an index of the cases with
//! their labelled root causes. What the public attribution datasets are converted into
//! (`bench/rca-public/convert_riskloc.py`) and what `benches/attribution_public.rs` and the
//! committed excerpt test read.
//!
//! ```text
//! <dir>/cases.csv   id,root_causes                  root_causes: a=a1&b=b3;c=c2 (';' between
//!                                                   causes, '&' between dimension=value pairs)
//! <dir>/<id>.csv    <dim>,…,actual,forecast         (additive KPI)
//!               or  <dim>,…,num_actual,num_forecast,den_actual,den_forecast   (ratio KPI)
//! ```

use std::fs;
use std::path::Path;

use crate::attribution::{Cube, CubeBuilder, KpiKind};
use crate::replay::split_csv;
use crate::score::Element;

/// One labelled case of a dataset directory.
#[derive(Debug, Clone)]
pub struct CaseEntry {
    pub id: String,
    pub truth: Vec<Element>,
}

/// Parses `a=a1&b=b3;c=c2` into elements; an empty string is no root cause.
pub fn parse_root_causes(s: &str) -> Result<Vec<Element>, String> {
    let mut out = Vec::new();
    for cause in s.split(';').map(str::trim).filter(|c| !c.is_empty()) {
        let mut el = Element::new();
        for pair in cause.split('&') {
            let (d, v) = pair
                .split_once('=')
                .ok_or_else(|| format!("root cause {cause:?}: {pair:?} is not dimension=value"))?;
            el.push((d.trim().to_string(), v.trim().to_string()));
        }
        el.sort();
        out.push(el);
    }
    Ok(out)
}

/// Reads `<dir>/cases.csv`.
pub fn read_index(dir: &Path) -> Result<Vec<CaseEntry>, String> {
    let path = dir.join("cases.csv");
    let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut lines = text.lines().enumerate();
    let header = lines
        .next()
        .map(|(_, h)| h.trim())
        .ok_or_else(|| format!("{}: empty", path.display()))?;
    if header != "id,root_causes" {
        return Err(format!(
            "{}: header must be `id,root_causes`, got {header:?}",
            path.display()
        ));
    }
    let mut out = Vec::new();
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let f = split_csv(line).map_err(|m| format!("{}:{}: {m}", path.display(), i + 1))?;
        let [id, rc] = f.as_slice() else {
            return Err(format!(
                "{}:{}: want 2 fields, got {}",
                path.display(),
                i + 1,
                f.len()
            ));
        };
        let truth =
            parse_root_causes(rc).map_err(|m| format!("{}:{}: {m}", path.display(), i + 1))?;
        out.push(CaseEntry {
            id: id.clone(),
            truth,
        });
    }
    Ok(out)
}

/// Reads one case's leaves, `<dir>/<id>.csv`. Rows the cube builder rejects (negative or
/// non-finite numbers) are counted in the returned builder's `skipped`; a malformed row is
/// an error.
pub fn read_case(dir: &Path, id: &str) -> Result<(Cube, usize), String> {
    let path = dir.join(format!("{id}.csv"));
    let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .ok_or_else(|| format!("{}: empty", path.display()))?
        .trim()
        .split(',')
        .collect();
    let (kind, nvals) = if header.ends_with(&["actual", "forecast"]) {
        (KpiKind::Additive, 2)
    } else if header.ends_with(&["num_actual", "num_forecast", "den_actual", "den_forecast"]) {
        (KpiKind::Ratio, 4)
    } else {
        return Err(format!(
            "{}: header must end with `actual,forecast` or \
             `num_actual,num_forecast,den_actual,den_forecast`",
            path.display()
        ));
    };
    let nd = header.len() - nvals;
    if nd == 0 {
        return Err(format!("{}: no dimension columns", path.display()));
    }
    let mut b = CubeBuilder::new(&header[..nd], kind);
    let mut nums = [0.0f64; 4];
    for (i, line) in lines.enumerate() {
        if line.is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != header.len() {
            return Err(format!(
                "{}:{}: want {} fields, got {}",
                path.display(),
                i + 2,
                header.len(),
                f.len()
            ));
        }
        for (k, s) in f[nd..].iter().enumerate() {
            nums[k] = s
                .trim()
                .parse()
                .map_err(|_| format!("{}:{}: {s:?} is not a number", path.display(), i + 2))?;
        }
        match kind {
            KpiKind::Additive => b.add(&f[..nd], nums[0], nums[1]),
            KpiKind::Ratio => b.add_ratio(&f[..nd], nums[0], nums[1], nums[2], nums[3]),
        }
    }
    let skipped = b.skipped;
    Ok((b.build(), skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_causes_parse_into_sorted_elements() {
        let rc = parse_root_causes("b=b3&a=a1;c=c2").unwrap();
        assert_eq!(
            rc,
            vec![
                vec![("a".into(), "a1".into()), ("b".into(), "b3".into())],
                vec![("c".into(), "c2".into())]
            ]
        );
        assert!(parse_root_causes("").unwrap().is_empty());
        assert!(parse_root_causes("a").is_err());
    }

    #[test]
    fn a_case_round_trips_and_bad_files_fail_with_the_line() {
        let dir = std::env::temp_dir().join(format!("sonde-attr-cases-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("cases.csv"), "id,root_causes\n1,a=x\n").unwrap();
        fs::write(
            dir.join("1.csv"),
            "a,b,actual,forecast\nx,1,5,10\ny,1,-1,2\n",
        )
        .unwrap();
        fs::write(dir.join("2.csv"), "a,b,actual,forecast\nx,1,5\n").unwrap();
        fs::write(dir.join("3.csv"), "a,b,real,predict\nx,1,5,1\n").unwrap();
        let idx = read_index(&dir).unwrap();
        assert_eq!(idx[0].id, "1");
        let (cube, skipped) = read_case(&dir, "1").unwrap();
        assert_eq!((cube.len(), skipped), (1, 1));
        assert!(
            read_case(&dir, "2")
                .unwrap_err()
                .contains(":2: want 4 fields")
        );
        assert!(
            read_case(&dir, "3")
                .unwrap_err()
                .contains("header must end")
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
