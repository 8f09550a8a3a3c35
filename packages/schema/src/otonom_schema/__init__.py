"""otonom-schema: the versioned 34-feature state of otonom-rl (numpy only).

The single definition of what a policy sees: the ordered feature specs, ``RlState``, the causal
feature maths shared by the offline dataset and the live state builder, and the ``.npz``
dataset format. Importing it does nothing but define names.
"""

from otonom_schema._dataset import (
    DATASET_FORMAT_VERSION,
    OfflineDataset,
    load_dataset,
    save_dataset,
)
from otonom_schema._dates import DateLike, parse_iso_date, to_date
from otonom_schema._errors import DatasetError, DateError, SchemaError, SchemaMismatchError
from otonom_schema._features import (
    PORTFOLIO_COLUMNS,
    MarketHistory,
    PortfolioSnapshot,
    SentimentSeries,
    compute_state,
    compute_states,
    log_returns_from_features,
    market_feature_matrix,
    portfolio_feature_matrix,
    sentiment_feature,
)
from otonom_schema._io import atomic_path, atomic_write, sha256_file
from otonom_schema._labels import ForwardLabels, forward_labels, risk_levels, tercile_cuts
from otonom_schema._panel import PanelCarry, market_feature_panel, market_feature_panel_step
from otonom_schema._spec import (
    ANALYSTS,
    FEATURE_NAMES,
    FEATURES,
    GROUPS,
    LOOKBACK,
    MATHS_PARAMS,
    SCHEMA_VERSION,
    STATE_DIM,
    Action,
    FeatureSpec,
    feature_index,
    feature_table_markdown,
    require_schema,
    schema_fingerprint,
)
from otonom_schema._state import (
    RANGE_TOLERANCE,
    RlState,
    columns_in_range,
    validate_state_array,
    validate_state_into,
    validate_states,
)

__version__ = "0.1.0"

__all__ = [
    "ANALYSTS",
    "DATASET_FORMAT_VERSION",
    "FEATURES",
    "FEATURE_NAMES",
    "GROUPS",
    "LOOKBACK",
    "MATHS_PARAMS",
    "PORTFOLIO_COLUMNS",
    "RANGE_TOLERANCE",
    "SCHEMA_VERSION",
    "STATE_DIM",
    "Action",
    "DatasetError",
    "DateError",
    "DateLike",
    "FeatureSpec",
    "ForwardLabels",
    "MarketHistory",
    "OfflineDataset",
    "PanelCarry",
    "PortfolioSnapshot",
    "RlState",
    "SchemaError",
    "SchemaMismatchError",
    "SentimentSeries",
    "atomic_path",
    "atomic_write",
    "columns_in_range",
    "compute_state",
    "compute_states",
    "feature_index",
    "feature_table_markdown",
    "forward_labels",
    "load_dataset",
    "log_returns_from_features",
    "market_feature_matrix",
    "market_feature_panel",
    "market_feature_panel_step",
    "parse_iso_date",
    "portfolio_feature_matrix",
    "require_schema",
    "risk_levels",
    "save_dataset",
    "schema_fingerprint",
    "sentiment_feature",
    "sha256_file",
    "tercile_cuts",
    "to_date",
    "validate_state_array",
    "validate_state_into",
    "validate_states",
]
