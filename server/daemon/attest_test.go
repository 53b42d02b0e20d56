package daemon

import "testing"

func TestCheckMinimums(t *testing.T) {
	for _, tc := range []struct {
		m  map[string]string
		ok bool
	}{
		{nil, true},
		{map[string]string{"dt100": "1.2.0"}, true},
		{map[string]string{"dt100": "1.2.0-rc.1"}, true},
		{map[string]string{"dt100": "1.2"}, false},
		{map[string]string{"dt100": "v1.2.0"}, false},
		{map[string]string{"dt100": "1.2.0+build"}, false},
		{map[string]string{"dt100": ""}, false},
		{map[string]string{"dt 100": "1.2.0"}, false},
		{map[string]string{"": "1.2.0"}, false},
	} {
		if err := checkMinimums(tc.m); (err == nil) != tc.ok {
			t.Errorf("checkMinimums(%v) = %v, want ok %v", tc.m, err, tc.ok)
		}
	}
}
