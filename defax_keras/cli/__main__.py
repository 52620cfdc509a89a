"""`python -m defax_keras.cli ...` (= `defax ...`)."""

import sys

from defax_keras.cli import main

sys.exit(main())
