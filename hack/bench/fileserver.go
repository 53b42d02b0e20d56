package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// referenceHandler is the yardstick for /tuf/: the standard library's file
// server over the repository directory, mounted the way the API mounts the
// repository handler.
func referenceHandler(repoDir string) http.Handler {
	return http.StripPrefix("/tuf", http.FileServer(http.Dir(repoDir)))
}

// newHTTPServer has the settings of daemon.Run's server, so that the two
// processes differ by their handler only.
func newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
}

// fileServerMain is the `fileserver` subcommand: a process serving
// referenceHandler on a free loopback port until SIGTERM.
func fileServerMain(args []string) {
	fs := flag.NewFlagSet("fileserver", flag.ExitOnError)
	dir := fs.String("dir", "", "repository directory (holds metadata/ and targets/)")
	addrFile := fs.String("addr-file", "", "file to write the listening address to")
	certFile := fs.String("tls-cert", "", "serve HTTPS with this certificate (PEM), as daemon.Run does")
	keyFile := fs.String("tls-key", "", "the key of -tls-cert")
	_ = fs.Parse(args)
	if *dir == "" || *addrFile == "" {
		log.Fatal("fileserver: -dir and -addr-file are required")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	srv := newHTTPServer(referenceHandler(*dir))
	errc := make(chan error, 1)
	if *certFile != "" {
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			log.Fatal(err)
		}
		// daemon.Run's TLS configuration.
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
		go func() { errc <- srv.ServeTLS(ln, "", "") }()
	} else {
		go func() { errc <- srv.Serve(ln) }()
	}
	tmp := *addrFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(ln.Addr().String()), 0o644); err != nil {
		log.Fatal(err)
	}
	if err := os.Rename(tmp, *addrFile); err != nil {
		log.Fatal(err)
	}
	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			log.Fatal(err)
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
}
