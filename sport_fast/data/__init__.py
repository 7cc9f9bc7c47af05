"""Stage 4a, preference data: ``StepGroup``, the append-only ``StepStore``, SPORT's rejection rule (trajectory ->
groups), character BLEU, and the importer of SPORT's released sharegpt pairs."""
