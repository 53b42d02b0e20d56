package update

import (
	"fmt"
	"time"
)

// Window is a daily maintenance window in the phone's local time, such as
// 02:00-04:30; it may wrap midnight (22:00-02:00).
type Window struct {
	start, end time.Duration // since midnight
}

// ParseWindow reads "HH:MM-HH:MM".
func ParseWindow(s string) (*Window, error) {
	var h1, m1, h2, m2 int
	var rest string
	n, _ := fmt.Sscanf(s, "%d:%d-%d:%d%s", &h1, &m1, &h2, &m2, &rest)
	if n != 4 || len(s) > len("00:00-00:00") {
		return nil, fmt.Errorf("maintenance window %q: want HH:MM-HH:MM", s)
	}
	for _, v := range [][2]int{{h1, m1}, {h2, m2}} {
		if v[0] < 0 || v[0] > 23 || v[1] < 0 || v[1] > 59 {
			return nil, fmt.Errorf("maintenance window %q: %02d:%02d is not a time of day", s, v[0], v[1])
		}
	}
	w := &Window{
		start: time.Duration(h1)*time.Hour + time.Duration(m1)*time.Minute,
		end:   time.Duration(h2)*time.Hour + time.Duration(m2)*time.Minute,
	}
	if w.start == w.end {
		return nil, fmt.Errorf("maintenance window %q is empty", s)
	}
	return w, nil
}

// Contains reports whether t's time of day (in t's location) is inside.
func (w *Window) Contains(t time.Time) bool {
	y, mo, d := t.Date()
	since := t.Sub(time.Date(y, mo, d, 0, 0, 0, 0, t.Location()))
	if w.start < w.end {
		return since >= w.start && since < w.end
	}
	return since >= w.start || since < w.end
}

func (w *Window) String() string {
	f := func(d time.Duration) string { return fmt.Sprintf("%02d:%02d", int(d.Hours()), int(d.Minutes())%60) }
	return f(w.start) + "-" + f(w.end)
}
