package api

import (
	"context"
	_ "embed"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/dialtone-dev/dialtone/server/auth"
	"github.com/getkin/kin-openapi/openapi3"
)

//go:embed openapi.yaml
var openAPIFile []byte

// apiOperation is one operation of openapi.yaml.
type apiOperation struct {
	method, path string
	op           *openapi3.Operation
	perm         string // x-dialtone-permission
	tenant       string // x-dialtone-tenant
}

func (o apiOperation) pattern() string { return o.method + " " + o.path }

// loadOpenAPI loads and validates openapi.yaml and returns its operations
// under /v1, sorted by pattern.
func loadOpenAPI(t *testing.T) (*openapi3.T, []apiOperation) {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(openAPIFile)
	if err != nil {
		t.Fatalf("loading openapi.yaml: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.yaml is not valid OpenAPI 3: %v", err)
	}
	var ops []apiOperation
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			str := func(k string) string {
				s, _ := op.Extensions[k].(string)
				return s
			}
			ops = append(ops, apiOperation{method: method, path: path, op: op,
				perm: str("x-dialtone-permission"), tenant: str("x-dialtone-tenant")})
		}
	}
	slices.SortFunc(ops, func(a, b apiOperation) int { return strings.Compare(a.pattern(), b.pattern()) })
	return doc, ops
}

// testRoutes is the routes table, as the tests see it.
func testRoutes(t *testing.T) []route {
	t.Helper()
	return (&API{}).routes()
}

// TestOpenAPIMatchesRoutes: openapi.yaml is valid, describes every route of
// the routes table with its permission, tenant rule, security and path
// parameters, and no route that the table lacks.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	doc, ops := loadOpenAPI(t)
	routes := testRoutes(t)
	byPattern := map[string]route{}
	for _, rt := range routes {
		byPattern[rt.pattern] = rt
	}
	seen := map[string]bool{}
	for _, o := range ops {
		seen[o.pattern()] = true
		rt, ok := byPattern[o.pattern()]
		if !ok {
			t.Errorf("openapi.yaml has %s, the routes table does not", o.pattern())
			continue
		}
		if o.perm != string(rt.perm) {
			t.Errorf("%s: x-dialtone-permission %q, the routes table says %q", o.pattern(), o.perm, rt.perm)
		}
		if rt.perm != Public && o.tenant != rt.tenant.String() {
			t.Errorf("%s: x-dialtone-tenant %q, the routes table says %q", o.pattern(), o.tenant, rt.tenant)
		}
		security := doc.Security
		if o.op.Security != nil {
			security = *o.op.Security
		}
		if public := len(security) == 0; public != (rt.perm == Public) {
			t.Errorf("%s: security %v, but the route's permission is %s", o.pattern(), security, rt.perm)
		}
		for _, code := range []int{http.StatusUnauthorized, http.StatusForbidden} {
			if rt.perm != Public && o.op.Responses.Status(code) == nil {
				t.Errorf("%s: no %d response", o.pattern(), code)
			}
		}
		if (rt.tenant == fromDevice || rt.tenant == fromToken) && o.op.Responses.Status(http.StatusNotFound) == nil {
			t.Errorf("%s: no 404 response for a %s of another tenant", o.pattern(), rt.tenant)
		}
		for _, name := range pathParams(o.path) {
			if p := o.op.Parameters.GetByInAndName("path", name); p == nil {
				t.Errorf("%s: path parameter %s not described", o.pattern(), name)
			}
		}
	}
	for _, rt := range routes {
		if !seen[rt.pattern] {
			t.Errorf("the routes table has %s, openapi.yaml does not", rt.pattern)
		}
	}
	t.Logf("%d operations in openapi.yaml, %d routes", len(ops), len(routes))
}

// TestRoutesHavePolicies: every route names a permission of auth's policy
// table (or is public), and a tenant rule that fits the permission's scope.
func TestRoutesHavePolicies(t *testing.T) {
	for _, rt := range testRoutes(t) {
		if rt.perm == Public {
			continue
		}
		if !auth.ValidPermission(rt.perm) {
			t.Errorf("%s: permission %q is not in the policy table", rt.pattern, rt.perm)
			continue
		}
		tenantScoped := auth.ScopeOf(rt.perm) == auth.ScopeTenant
		if tenantScoped == (rt.tenant == fromNone) {
			t.Errorf("%s: permission %s (scope %d) with tenant rule %s", rt.pattern, rt.perm, auth.ScopeOf(rt.perm), rt.tenant)
		}
	}
}

// pathParams returns the {names} of a path.
func pathParams(path string) []string {
	var out []string
	for _, seg := range strings.Split(path, "/") {
		if strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "}") {
			out = append(out, strings.TrimSuffix(seg[1:], "}"))
		}
	}
	return out
}
