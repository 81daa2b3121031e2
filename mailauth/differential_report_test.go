package mailauth_test

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
)

var oracleName = map[string]string{
	"spf": "pyspf (SPF)", "dkim": "dkimpy (DKIM)", "arc": "dkimpy (ARC)",
	"dmarc": "OpenDMARC (DMARC)", "iprev": "dnspython RFC 8601 check (iprev)",
	"header": "python3-authres (A-R syntax)",
}

// report logs the table, row by row, and its counts; with $MAILAUTH_TABLE set it writes the
// counts, a table of one line per case and the full table there, as Markdown.
func report(t *testing.T, rows []row) {
	t.Helper()
	full, counts := fullTable(rows), countTable(rows)
	t.Log("\n" + full + "\n" + counts)
	if path := os.Getenv("MAILAUTH_TABLE"); path != "" {
		doc := "## Counts\n\n" + counts + "\n## One line per case\n\n" + caseTable(rows) + "\n## Every row\n\n" + full
		if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
			t.Error(err)
		}
	}
}

// fullTable has one row per case and method.
func fullTable(rows []row) string {
	var b strings.Builder
	b.WriteString("| case | method | ours | oracle | verdict |\n|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", r.Case, r.Method, cell(r.Ours), cell(r.Oracle), cell(r.Verdict))
	}
	return b.String()
}

// countTable counts, per oracle, the rows that agree, the justified exceptions and the
// disagreements.
func countTable(rows []row) string {
	counts := map[string][3]int{}
	for _, r := range rows {
		k := counts[oracleName[r.Method]]
		switch {
		case !r.OK:
			k[2]++
		case r.Verdict == "agree":
			k[0]++
		default:
			k[1]++
		}
		counts[oracleName[r.Method]] = k
	}
	names := make([]string, 0, len(counts))
	for n := range counts {
		names = append(names, n)
	}
	slices.Sort(names)
	var b strings.Builder
	b.WriteString("| oracle | agree | justified exception | disagree |\n|---|---|---|---|\n")
	for _, n := range names {
		k := counts[n]
		fmt.Fprintf(&b, "| %s | %d | %d | %d |\n", n, k[0], k[1], k[2])
	}
	return b.String()
}

// caseTable has one line per case: our verdict per method where the oracle says the same,
// "ours ≠ oracle [n]" where an exception (note n) or a disagreement (DISAGREE) is.
func caseTable(rows []row) string {
	var b, notes strings.Builder
	b.WriteString("| case | " + strings.Join(methods[:5], " | ") + " |\n|---" + strings.Repeat("|---", 5) + "|\n")
	seen := map[string]int{}
	for i := 0; i < len(rows); i += len(methods) {
		fmt.Fprintf(&b, "| %s |", rows[i].Case)
		for _, r := range rows[i : i+len(methods)] {
			if r.Method == "header" {
				if r.Verdict != "agree" {
					fmt.Fprintf(&b, " (A-R field: %s)", cell(r.Verdict))
				}
				continue
			}
			switch {
			case r.Verdict == "agree":
				fmt.Fprintf(&b, " %s |", cell(r.Ours))
			case !r.OK:
				fmt.Fprintf(&b, " **%s ≠ %s DISAGREE** |", cell(r.Ours), cell(r.Oracle))
			default:
				n, ok := seen[r.Verdict]
				if !ok {
					n = len(seen) + 1
					seen[r.Verdict] = n
					fmt.Fprintf(&notes, "%d. %s\n", n, r.Verdict)
				}
				fmt.Fprintf(&b, " %s ≠ %s [%d] |", cell(r.Ours), cell(r.Oracle), n)
			}
		}
		b.WriteString("\n")
	}
	return b.String() + "\nOurs first, then the oracle's. Exceptions:\n\n" + notes.String()
}

func cell(s string) string { return strings.ReplaceAll(s, "|", "\\|") }
