import sys

from diffret_pyserini.pipeline.driver import main

sys.exit(main())
