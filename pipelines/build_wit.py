"""spark-submit entry: `wit-builder run` (curate -> download -> finalize -> stats) in one session.

    spark-submit --master spark://HOST:7077 pipelines/build_wit.py --config pipelines/cluster.toml

Takes the same options as `wit-builder run` (--config, --set section.key=value, --until, --input,
--out, --force). Under spark-submit, spark-submit's --master and --conf stand unless the config's
`[spark] master` names another one; executor memory and cores come from `[spark] extra_conf`
or from spark-submit's own flags.
"""

import sys

from wit_builder.cli import main

if __name__ == "__main__":  # img2dataset's download processes are spawned: they re-import this file
    sys.exit(main(["run", *sys.argv[1:]]))
