// Command rusage runs a command and writes its peak RSS, from wait4's
// rusage, to a file:
//
//	rusage -out FILE [-pid-file FILE] -- CMD [ARGS...]
//
// FILE gets "MAXRSS_KIB WRAPPER_HWM_KIB"; rusage exits with CMD's status.
//
// Why a separate, dependency-free program: Go starts a child with vfork
// semantics (CLONE_VM), so until its exec the child runs on its parent's
// address space, and at exec Linux folds that address space's high-water
// RSS into the child's ru_maxrss (fs/exec.c, exec_mmap). A child of the
// bench driver, which links the whole server and hashes 512 MiB files,
// would report the driver's peak rather than its own. This wrapper lends
// its child only its own few MiB, which it reports alongside: the figure
// is never below that.
package main

import (
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

func main() {
	out := flag.String("out", "", "file to write \"MAXRSS_KIB WRAPPER_HWM_KIB\" to")
	pidFile := flag.String("pid-file", "", "file to write CMD's pid to once it started")
	flag.Parse()
	rest := flag.Args()
	if len(rest) == 0 || *out == "" {
		log.Fatal("usage: rusage -out FILE [-pid-file FILE] -- CMD [ARGS...]")
	}
	self, err := hwmKiB()
	if err != nil {
		log.Fatal(err)
	}
	cmd := exec.Command(rest[0], rest[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	if *pidFile != "" {
		if err := writeAtomic(*pidFile, strconv.Itoa(cmd.Process.Pid)); err != nil {
			log.Fatal(err)
		}
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		log.Fatal(err)
	}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		log.Fatal("no rusage")
	}
	if err := writeAtomic(*out, fmt.Sprintf("%d %d", ru.Maxrss, self)); err != nil {
		log.Fatal(err)
	}
	os.Exit(cmd.ProcessState.ExitCode())
}

// hwmKiB is this process's VmHWM.
func hwmKiB() (int64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		}
	}
	return 0, errors.New("no VmHWM in /proc/self/status")
}

func writeAtomic(path, s string) error {
	if err := os.WriteFile(path+".tmp", []byte(s), 0o644); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}
