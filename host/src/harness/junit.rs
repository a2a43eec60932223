//! JUnit XML for suite results, the format CI systems show test results in.

use std::fmt::Write;

use super::CaseResult;

/// One `<testsuite>` per suite file, one `<testcase>` per case; a failing
/// case carries its failures, golden diff and per-plugin patches.
pub fn render(results: &[CaseResult]) -> String {
    let mut suites: Vec<(&str, Vec<&CaseResult>)> = Vec::new();
    for r in results {
        match suites.iter_mut().find(|(s, _)| *s == r.suite) {
            Some((_, cases)) => cases.push(r),
            None => suites.push((&r.suite, vec![r])),
        }
    }
    let failed = results.iter().filter(|r| !r.passed).count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "<testsuites name=\"berth plugin test\" tests=\"{}\" failures=\"{failed}\">",
        results.len()
    );
    for (suite, cases) in suites {
        let failures = cases.iter().filter(|c| !c.passed).count();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\">",
            escape(suite),
            cases.len()
        );
        for c in cases {
            let open = format!(
                "    <testcase classname=\"{}\" name=\"{}\"",
                escape(suite),
                escape(&c.case)
            );
            if c.passed {
                let _ = writeln!(out, "{open}/>");
                continue;
            }
            let mut detail = c.failures.join("\n");
            if let Some(diff) = &c.diff {
                detail.push_str("\n\n");
                detail.push_str(diff);
            }
            for s in &c.steps {
                let patch = serde_json::to_string(&s.patch).unwrap_or_default();
                let _ = write!(detail, "\n{} changed: {patch}", s.plugin);
            }
            let message = c.failures.first().map(String::as_str).unwrap_or("failed");
            let _ = writeln!(
                out,
                "{open}>\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                escape(message),
                escape(&detail)
            );
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

/// Escapes text for XML attributes and content, dropping the control
/// characters XML 1.0 cannot carry at all.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(ch),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(suite: &str, name: &str, failures: &[&str]) -> CaseResult {
        CaseResult {
            suite: suite.into(),
            case: name.into(),
            passed: failures.is_empty(),
            failures: failures.iter().map(|f| f.to_string()).collect(),
            diff: (!failures.is_empty()).then(|| "-a\n+b".to_string()),
            steps: Vec::new(),
        }
    }

    #[test]
    fn suites_cases_and_failures_are_counted_and_escaped() {
        let xml = render(&[
            case("a.yaml", "ok", &[]),
            case("a.yaml", "bad <one>", &["deny \"x\" & y\u{1}"]),
            case("b.yaml", "ok", &[]),
        ]);
        assert!(xml.contains("<testsuites name=\"berth plugin test\" tests=\"3\" failures=\"1\">"));
        assert!(xml.contains("<testsuite name=\"a.yaml\" tests=\"2\" failures=\"1\">"));
        assert!(xml.contains("<testsuite name=\"b.yaml\" tests=\"1\" failures=\"0\">"));
        assert!(xml.contains("<testcase classname=\"a.yaml\" name=\"ok\"/>"));
        assert!(xml.contains("name=\"bad &lt;one&gt;\">"));
        assert!(xml.contains("<failure message=\"deny &quot;x&quot; &amp; y\">"));
        assert!(xml.contains("-a\n+b</failure>"));
        assert!(!xml.contains('\u{1}'));
    }
}
