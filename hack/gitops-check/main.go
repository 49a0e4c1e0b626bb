// gitops-check evaluates, on objects read as JSON from stdin (one object, or a
// List), the health rules GitOps tools apply to them, with those tools' own
// libraries:
//
//	gitops-check kstatus            Flux's kstatus (wait: true), fluxcd/cli-utils
//	gitops-check argocd HEALTH.lua  an Argo CD health script, run by gopher-lua
//	                                as Argo CD runs it (the object as global `obj`)
//
// It prints one JSON line per object: {"kind", "name", "status", "message"}.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/fluxcd/cli-utils/pkg/kstatus/status"
	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

type result struct {
	Kind    string `json:"kind"`
	Name    string `json:"name"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "gitops-check:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: gitops-check kstatus | argocd HEALTH.lua")
	}
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		return err
	}
	objects, err := decode(raw)
	if err != nil {
		return err
	}
	var check func(*unstructured.Unstructured) (result, error)
	switch args[0] {
	case "kstatus":
		check = kstatus
	case "argocd":
		if len(args) != 2 {
			return fmt.Errorf("argocd needs the path of a health.lua")
		}
		script, err := os.ReadFile(args[1])
		if err != nil {
			return err
		}
		check = func(u *unstructured.Unstructured) (result, error) { return argocd(string(script), u) }
	default:
		return fmt.Errorf("unknown check %q", args[0])
	}
	out := json.NewEncoder(os.Stdout)
	for _, u := range objects {
		r, err := check(u)
		if err != nil {
			return fmt.Errorf("%s/%s: %w", u.GetNamespace(), u.GetName(), err)
		}
		r.Kind, r.Name = u.GetKind(), u.GetName()
		if err := out.Encode(r); err != nil {
			return err
		}
	}
	return nil
}

func decode(raw []byte) ([]*unstructured.Unstructured, error) {
	var u unstructured.Unstructured
	if err := u.UnmarshalJSON(raw); err != nil {
		return nil, err
	}
	if !u.IsList() {
		return []*unstructured.Unstructured{&u}, nil
	}
	list, err := u.ToList()
	if err != nil {
		return nil, err
	}
	out := make([]*unstructured.Unstructured, 0, len(list.Items))
	for i := range list.Items {
		out = append(out, &list.Items[i])
	}
	return out, nil
}

func kstatus(u *unstructured.Unstructured) (result, error) {
	r, err := status.Compute(u)
	if err != nil {
		return result{}, err
	}
	return result{Status: r.Status.String(), Message: r.Message}, nil
}

// argocd runs a health script the way Argo CD does: the object converted to
// Lua tables as the global `obj`, the script's returned table read for
// `status` and `message`.
func argocd(script string, u *unstructured.Unstructured) (result, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{{lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}, {lua.StringLibName, lua.OpenString}, {lua.MathLibName, lua.OpenMath}} {
		l.Push(l.NewFunction(lib.open))
		l.Push(lua.LString(lib.name))
		l.Call(1, 0)
	}
	l.SetGlobal("obj", toLua(l, u.Object))
	if err := l.DoString(script); err != nil {
		return result{}, err
	}
	table, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return result{}, fmt.Errorf("the health script returned %s, not a table", l.Get(-1).Type())
	}
	return result{
		Status:  lua.LVAsString(table.RawGetString("status")),
		Message: lua.LVAsString(table.RawGetString("message")),
	}, nil
}

func toLua(l *lua.LState, v interface{}) lua.LValue {
	switch v := v.(type) {
	case map[string]interface{}:
		t := l.NewTable()
		for k, e := range v {
			t.RawSetString(k, toLua(l, e))
		}
		return t
	case []interface{}:
		t := l.NewTable()
		for _, e := range v {
			t.Append(toLua(l, e))
		}
		return t
	case string:
		return lua.LString(v)
	case bool:
		return lua.LBool(v)
	case int64:
		return lua.LNumber(v)
	case float64:
		return lua.LNumber(v)
	case nil:
		return lua.LNil
	default:
		return lua.LString(fmt.Sprint(v))
	}
}
