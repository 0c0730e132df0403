"""``vlp fit|validate|test|predict`` (LightningCLI) and the project's own subcommands."""

from __future__ import annotations

import importlib
import sys

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from vlp.datamodules.datamodule import VLPDataModule
from vlp.module import VLPModule

TRAINER_DEFAULTS = {
    "logger": {
        "class_path": "lightning.pytorch.loggers.CSVLogger",
        "init_args": {"save_dir": "runs"},
    },
}


class VLPCLI(LightningCLI):
    """LightningCLI with the model's tokenizers and batch needs handed to the data module."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("model.tokenize", "data.tokenize", apply_on="instantiate")
        parser.link_arguments("model.batch_needs", "data.needs", apply_on="instantiate")
        parser.link_arguments("model.lm_tokenize", "data.lm_tokenize", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        """Checkpoints load weights-only unless the user explicitly says otherwise."""
        config = self.config.get(self.subcommand) if self.subcommand else None
        if config is not None and config.get("weights_only") is None:
            config["weights_only"] = True

    def before_fit(self) -> None:
        self.datamodule.check_needs(self.model.batch_needs)


def run_cli(args: list[str] | None = None, run: bool = True) -> VLPCLI:
    return VLPCLI(
        VLPModule,
        VLPDataModule,
        trainer_defaults=TRAINER_DEFAULTS,
        seed_everything_default=0,
        parser_kwargs={"parser_mode": "omegaconf"},
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        args=args,
        run=run,
    )


#: subcommands outside LightningCLI: name -> module whose ``main(argv)`` runs it
#: (imported only when used, so ``vlp fit`` never pays for them)
COMMANDS = {
    "data": "vlp.data_command",
    "export": "vlp.export",
    "sweep": "vlp.sweep",
    "report": "vlp.report",
}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in COMMANDS:
        importlib.import_module(COMMANDS[sys.argv[1]]).main(sys.argv[2:])
        return
    run_cli()


if __name__ == "__main__":
    main()
