package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
)

// row is one line of the result table. A row with a target is judged by
// its ratio; one without is printed for information.
type row struct {
	name     string
	value    float64
	ref      float64
	unit     string
	refName  string    // what the reference is, printed after its value
	ratio    float64   // <0: none
	min, max float64   // target ratio bounds; 0 means none
	target   string    // how the target reads, when it is not a plain ratio
	failNote string    // set when the row fails for another reason (errors)
	rounds   []float64 // per-round ratios, when the ratio is their median
}

func (r row) judged() bool { return r.min > 0 || r.max > 0 }

func (r row) pass() bool {
	return r.failNote == "" && r.meets(r.ratio)
}

func (r row) meets(ratio float64) bool {
	if r.min > 0 && !(ratio >= r.min) {
		return false
	}
	if r.max > 0 && !(ratio <= r.max) {
		return false
	}
	return true
}

// missedRounds counts the rounds whose own ratio misses the target: a
// verdict the median carries against many of them is fragile.
func (r row) missedRounds() int {
	n := 0
	for _, x := range r.rounds {
		if !r.meets(x) {
			n++
		}
	}
	return n
}

func fmtNum(v float64, unit string) string {
	switch {
	case v < 0:
		return "-"
	case unit == "":
		return fmt.Sprintf("%.0f", v)
	case v >= 1000:
		return fmt.Sprintf("%.0f %s", v, unit)
	case v >= 100:
		return fmt.Sprintf("%.1f %s", v, unit)
	default:
		return fmt.Sprintf("%.2f %s", v, unit)
	}
}

func printTable(w io.Writer, rows []row) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVALUE\tREFERENCE\tRATIO\tTARGET\tRESULT")
	for _, r := range rows {
		ref := "-"
		if r.ref >= 0 {
			ref = fmtNum(r.ref, r.unit)
			if r.refName != "" {
				ref += " (" + r.refName + ")"
			}
		}
		ratio := "-"
		if r.ratio >= 0 {
			ratio = fmt.Sprintf("%.3fx", r.ratio)
		}
		target := r.target
		if target == "" {
			switch {
			case r.min > 0:
				target = fmt.Sprintf(">= %.2fx", r.min)
			case r.max > 0:
				target = fmt.Sprintf("<= %.3fx", r.max)
			default:
				target = "none yet"
			}
		}
		result := "info"
		if r.judged() {
			result = "PASS"
			if !r.pass() {
				result = "FAIL"
			}
		}
		if r.failNote != "" {
			result += " (" + r.failNote + ")"
		} else if n := r.missedRounds(); r.judged() && n > 0 {
			result += fmt.Sprintf(" (%d/%d rounds miss)", n, len(r.rounds))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.name, fmtNum(r.value, r.unit), ref, ratio, target, result)
	}
	_ = tw.Flush()
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return -1
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// spread is (max-min)/median in percent: how stable a series was.
func spread(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	m := median(xs)
	if m <= 0 {
		return 0
	}
	return (slices.Max(xs) - slices.Min(xs)) / m * 100
}

func fmtSeries(xs []float64, format string) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf(format, x)
	}
	return strings.Join(parts, " ")
}
