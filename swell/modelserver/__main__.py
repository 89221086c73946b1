import sys

if sys.argv[1:] == ["--await-job"]:  # pre-started on a Ray node (swell.modelserver._node): the job comes on stdin
    from swell.modelserver._server import await_job, main

    sys.exit(main(await_job()))

from swell.modelserver import main

sys.exit(main())
