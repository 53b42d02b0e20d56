//go:build tools

// This file pins the dependency set while the packages that use it are written,
// so that `go mod tidy` in one package does not drop what another needs.
package dialtone

import (
	_ "github.com/eclipse/paho.mqtt.golang"
	_ "github.com/mochi-mqtt/server/v2"
	_ "github.com/pressly/goose/v3"
	_ "github.com/schollz/progressbar/v3"
	_ "github.com/sigstore/sigstore/pkg/signature"
	_ "github.com/spf13/cobra"
	_ "github.com/theupdateframework/go-tuf/v2/metadata"
	_ "github.com/theupdateframework/go-tuf/v2/metadata/updater"
	_ "gopkg.in/yaml.v3"
	_ "modernc.org/sqlite"
)
