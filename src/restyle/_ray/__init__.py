"""Running restyle's stages on Ray: catalog builds and bulk analysis."""
