package keys

import (
	"slices"

	// The sigstore KMS providers register their schemes with kms.Get.
	_ "github.com/sigstore/sigstore/pkg/signature/kms/aws"
	_ "github.com/sigstore/sigstore/pkg/signature/kms/azure"
	_ "github.com/sigstore/sigstore/pkg/signature/kms/gcp"
	_ "github.com/sigstore/sigstore/pkg/signature/kms/hashivault"
)

// linkedKMSProviders lists the KMS schemes this build's imports register.
var linkedKMSProviders = []string{"awskms", "gcpkms", "azurekms", "hashivault"}

func kmsProviderLinked(scheme string) bool { return slices.Contains(linkedKMSProviders, scheme) }
