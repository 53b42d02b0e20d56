// Package rollout owns the server's steering of devices: the version a
// device should run. A desired version is kept in the fleet store and
// delivered as a retained "desired" command on the device's cmd topic, so
// that a device that was offline finds it when it connects. The agent
// still picks only among TUF-verified targets and never below its
// anti-rollback floor: a desired version can choose, never force.
//
// One-off commands (check, attest, reboot, config: Service.Command) go on the same
// topic at QoS 1 but are not retained: they are for a device connected now,
// never replayed to one that connects later.
package rollout

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/store"
)

// Store keeps desired versions and knows which tenant a device is of.
type Store interface {
	// SetDesired records device's desired version; store.ErrNotFound for an
	// unknown device.
	SetDesired(ctx context.Context, device, version string, at time.Time) (store.Desired, error)
	DesiredVersions(ctx context.Context) ([]store.Desired, error)
	// Device returns one device; store.ErrNotFound for an unknown one.
	Device(ctx context.Context, id string) (store.Device, error)
}

// Publisher publishes to the broker as the server.
type Publisher interface {
	Publish(topic string, payload []byte, retain bool, qos byte) error
}

// Service sets and delivers desired versions.
type Service struct {
	store Store
	pub   Publisher
	log   *slog.Logger
	now   func() time.Time
}

// New returns a service.
func New(st Store, pub Publisher, log *slog.Logger) *Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{store: st, pub: pub, log: log, now: time.Now}
}

// SetDesired records and delivers device's desired version ("" withdraws
// it). The store is written first: a broker outage leaves the version to
// be delivered by Restore, never a device told something not recorded.
func (s *Service) SetDesired(ctx context.Context, device, version string) (store.Desired, error) {
	d, err := s.store.SetDesired(ctx, device, version, s.now().UTC())
	if err != nil {
		return store.Desired{}, err
	}
	if err := s.deliver(d); err != nil {
		return d, err
	}
	return d, nil
}

// Restore publishes every recorded desired version again; the server runs
// it at start, since the embedded broker keeps no retained messages across
// restarts.
func (s *Service) Restore(ctx context.Context) error {
	ds, err := s.store.DesiredVersions(ctx)
	if err != nil {
		return fmt.Errorf("reading desired versions: %w", err)
	}
	for _, d := range ds {
		if err := s.deliver(d); err != nil {
			return err
		}
	}
	s.log.Info("desired versions restored", "devices", len(ds))
	return nil
}

func (s *Service) deliver(d store.Desired) error {
	cmd := wire.Command{Schema: wire.SchemaVersion, ID: fmt.Sprintf("desired-%d", d.Time.UnixNano()), Name: wire.CmdDesired, Version: d.Version, Time: d.Time}
	b, err := wire.EncodeCommand(cmd)
	if err != nil {
		return err
	}
	if err := s.pub.Publish(wire.Topic(d.Tenant, d.Device, wire.KindCmd), b, true, 1); err != nil {
		return fmt.Errorf("delivering desired version of %s: %w", d.Device, err)
	}
	return nil
}
