// composecheck loads a compose file the way `docker compose config` does (compose-go, the
// library Docker Compose itself is built on): schema validation, interpolation of the env
// file (`${VAR:?message}` fails), references between services, networks, volumes and
// secrets. Used by tests/deploy because no Docker engine or compose plugin runs here.
//
//	composecheck COMPOSE_FILE ENV_FILE  → prints the resolved services, exits 1 on an error
package main

import (
	"context"
	"fmt"
	"os"
	"sort"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: composecheck COMPOSE_FILE ENV_FILE")
		os.Exit(2)
	}
	options, err := cli.NewProjectOptions([]string{os.Args[1]},
		cli.WithEnvFiles(os.Args[2]), cli.WithDotEnv, cli.WithOsEnv,
		cli.WithResolvedPaths(true))
	if err == nil {
		var project interface{ ServiceNames() []string }
		project, err = options.LoadProject(context.Background())
		if err == nil {
			names := project.ServiceNames()
			sort.Strings(names)
			for _, name := range names {
				fmt.Println(name)
			}
			return
		}
	}
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
